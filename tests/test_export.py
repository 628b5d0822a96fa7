"""TorchScript export (`geoff export`): metadata in the file, checked on load."""
import json

import numpy as np
import pytest
import torch
from conftest import rattled_triclinic, small_model

import geoff
from geoff.cli import main as cli
from geoff.export import METADATA_FILE, export, load_exported, needs_global_frames, read_metadata
from geoff.graph import atoms_to_graph
from geoff.potentials import available_models


def test_export_roundtrip(tmp_path):
    model = small_model("schnet")
    path = export(model, tmp_path / "m.pt")
    module, meta = load_exported(path)
    assert meta["species"] == ["Cu", "Zr"] and meta["cutoff"] == 4.0
    assert meta["n_layers"] == model.n_layers and meta["dtype"] == "float64"
    assert meta["model"] == "schnet" and meta["geoff_version"] == geoff.__version__
    assert meta["needs_global_frames"] is False and meta["force_head"] == "conservative"
    graph = atoms_to_graph(rattled_triclinic(), model)
    graph["n_local"] = torch.tensor([graph["positions"].shape[0]])
    ref, out = model(graph, True, True), module(graph, True, True)
    for key in ("energy", "forces", "virial"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-12, atol=1e-12)


def test_cli_export_float32(tmp_path, capsys):
    geoff.save(small_model("schnet"), tmp_path / "m.ckpt")
    assert cli(["export", str(tmp_path / "m.ckpt"), "-o", str(tmp_path / "m.pt"),
                "--dtype", "float32"]) == 0
    assert "pair_coeff * * " in capsys.readouterr().out
    meta = read_metadata(tmp_path / "m.pt")
    assert meta["dtype"] == "float32"
    module, _ = load_exported(tmp_path / "m.pt")
    assert {p.dtype for p in module.parameters()} == {torch.float32}


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported model"):
        load_exported(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_exported(tmp_path / "text.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "plain.pt"))
    with pytest.raises(ValueError, match="not a geoff export"):
        load_exported(tmp_path / "plain.pt")
    # Metadata that does not describe the module it travels with.
    path = export(small_model("schnet"), tmp_path / "m.pt")
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    meta["species"] = ["Cu", "Pt"]
    torch.jit.save(module, str(tmp_path / "edited.pt"),
                   _extra_files={METADATA_FILE: json.dumps(meta)})
    with pytest.raises(ValueError, match="disagrees with the model"):
        load_exported(tmp_path / "edited.pt")
    del meta["cutoff"]
    torch.jit.save(module, str(tmp_path / "partial.pt"),
                   _extra_files={METADATA_FILE: json.dumps(meta)})
    with pytest.raises(ValueError, match="missing \\['cutoff'\\]"):
        load_exported(tmp_path / "partial.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_export_needs_gpu(tmp_path):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        export(small_model("schnet"), tmp_path / "m.pt", device="cuda")


@pytest.mark.skipif("faenet" not in available_models(), reason="faenet not registered yet")
def test_global_frames_flag():
    assert needs_global_frames(small_model("faenet", frames="global"))
    assert not needs_global_frames(small_model("faenet", frames="local"))


def test_export_file_is_atomic(tmp_path):
    """A failed export leaves an existing file untouched."""
    path = export(small_model("schnet"), tmp_path / "m.pt")
    before = path.read_bytes()
    with pytest.raises(ValueError):
        export(small_model("schnet"), path, dtype="float16")
    assert path.read_bytes() == before
    assert np.all([p.name == "m.pt" for p in tmp_path.iterdir()])

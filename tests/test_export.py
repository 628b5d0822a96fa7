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


def rewrite_metadata(src, dst, drop=(), **changes):
    """Copy an exported file with its metadata edited (as another geoff version could write)."""
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(str(src), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    meta.update(changes)
    for key in drop:
        del meta[key]
    torch.jit.save(module, str(dst), _extra_files={METADATA_FILE: json.dumps(meta)})
    return dst


@pytest.mark.parametrize("force_head,hops", [("conservative", 2), ("both", 2), ("direct", 3)])
def test_metadata_carries_the_reach(tmp_path, force_head, hops):
    """receptive_hops: n_layers cutoff spheres, one more for a direct force head."""
    path = export(small_model("schnet", force_head=force_head), tmp_path / "m.pt")
    meta = read_metadata(path)
    assert meta["format_version"] == 2 and meta["n_layers"] == 2
    assert meta["receptive_hops"] == hops


def test_format_1_files_get_the_reach_computed(tmp_path):
    path = export(small_model("schnet", force_head="direct"), tmp_path / "m.pt")
    old = rewrite_metadata(path, tmp_path / "v1.pt", drop=["receptive_hops"], format_version=1)
    assert read_metadata(old)["receptive_hops"] == 3
    broken = rewrite_metadata(path, tmp_path / "v2.pt", drop=["receptive_hops"])
    with pytest.raises(ValueError, match="no receptive_hops; re-export"):
        read_metadata(broken)


def test_cli_deck_hint_reads_the_reach(tmp_path, capsys):
    """`geoff export` prints comm_modify cutoff >= receptive_hops x cutoff + skin."""
    geoff.save(small_model("schnet", force_head="direct"), tmp_path / "m.ckpt")
    assert cli(["export", str(tmp_path / "m.ckpt"), "-o", str(tmp_path / "m.pt")]) == 0
    out = capsys.readouterr().out
    assert "comm_modify cutoff 14 " in out and ">= 3 x cutoff" in out  # 3 x 4.0 Å + 2.0 Å


def test_export_carries_property_names(tmp_path, capsys):
    """A property model's export lists its heads (what compute geoff/atom reads) and `geoff
    export` prints the compute's lines; an energy model lists none and prints no compute."""
    energy = small_model("schnet")
    assert read_metadata(export(energy, tmp_path / "e.pt"))["properties"] == []
    model = small_model("schnet", properties=["barrier_mean", "barrier_min"])
    meta = read_metadata(export(model, tmp_path / "p.pt"))
    assert meta["properties"] == ["barrier_mean", "barrier_min"]
    module, _ = load_exported(tmp_path / "p.pt")
    graph = atoms_to_graph(rattled_triclinic(), model)
    out = module(graph, False, False)
    for name in meta["properties"]:
        torch.testing.assert_close(out[name], model(graph, False, False)[name])
    geoff.save(model, tmp_path / "p.ckpt")
    assert cli(["export", str(tmp_path / "p.ckpt"), "-o", str(tmp_path / "p2.pt")]) == 0
    printed = capsys.readouterr().out
    assert f"compute P all geoff/atom {tmp_path / 'p2.pt'} Cu Zr" in printed
    assert "c_P[1] c_P[2]" in printed
    geoff.save(energy, tmp_path / "e.ckpt")
    assert cli(["export", str(tmp_path / "e.ckpt"), "-o", str(tmp_path / "e2.pt")]) == 0
    assert "geoff/atom" not in capsys.readouterr().out

"""nequip's peer rows for ``speed.py --peers``: the runner's spec handling and the names that
select the AOTInductor rows (no nequip needed), and, where nequip's peer folder is installed
(``$GEOFF_PEERS/nequip``, never in CI), the whole AOTInductor path on the CPU at a tiny size:
nequip-train, nequip-package, nequip-compile, then the compiled model against the eager one
and a runner row with its compile seconds."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "peers"))
import nequip_package  # noqa: E402
import nequip_peer  # noqa: E402
from peers import PACKAGES, peers_dir, selected  # noqa: E402

TINY = {"num_features": 8, "l_max": 1, "num_layers": 1}


def test_spec_modes_and_modifiers_are_checked():
    assert nequip_peer.check_spec({}) == {"compile": "eager", "modifiers": [], "hyper": {}}
    spec = {"compile": "aotinductor", "modifiers": ["enable_CuEquivariance"], "hyper": TINY}
    assert nequip_peer.check_spec(spec) == dict(spec)
    with pytest.raises(ValueError, match="runs eager on one frame"):
        nequip_peer.check_spec({"compile": "compile"})
    with pytest.raises(ValueError, match="compile='aotinductor'"):
        nequip_peer.check_spec({"compile": "eager", "modifiers": ["enable_CuEquivariance"]})


def test_peer_names_select_the_aot_rows():
    [aot] = selected(["nequip_aot"])
    assert aot.options == {"compile": "aotinductor"} and not aot.gpu_only and not aot.not_run
    [cueq] = selected(["nequip_aot_cueq"])
    assert cueq.options["modifiers"] == ["enable_CuEquivariance"] and cueq.gpu_only
    every = selected(["nequip"])
    assert {p.name for p in every} == {"nequip_eager", "nequip_aot", "nequip_aot_cueq"}
    for peer in every:  # each option set is one the runner accepts
        nequip_peer.check_spec(peer.options)
    assert {"pytorch-lightning==2.6.6", "lmdb==1.7.5"} <= set(PACKAGES["nequip"])


def test_training_config_is_the_matched_model_with_fixed_weights():
    config = nequip_package.train_config("float64", dict(nequip_package.MATCHED))
    model = config["training_module"]["model"]
    for key, value in nequip_package.MATCHED.items():
        assert model[key] == value
    assert (model["num_features"], model["l_max"], model["num_layers"]) == (64, 2, 3)
    assert model["seed"] == 0 and model["model_dtype"] == "float64"
    assert model["type_names"] == ["Cu", "Zr"]
    assert config["training_module"]["optimizer"]["lr"] == 0.0  # weights stay at seed 0
    assert config["trainer"]["max_epochs"] == 1
    json.dumps(config)  # JSON, hence YAML that hydra reads


def test_artefact_names_say_dtype_device_kernels_and_changed_hyper(tmp_path):
    assert nequip_package._tag(dict(nequip_package.MATCHED)) == ""
    assert nequip_package._tag(dict(nequip_package.MATCHED, l_max=1)) == "-l_max1"
    package = tmp_path / "nequip-cuzr-float32.nequip.zip"
    assert nequip_package.compiled_path(package, "cuda", ["enable_CuEquivariance"]).name == \
        "nequip-cuzr-float32-cuda-enable_CuEquivariance-ase-forces.nequip.pt2"
    assert nequip_package.compiled_path(package, "cpu", []).name == \
        "nequip-cuzr-float32-cpu-e3nn-ase-forces.nequip.pt2"


def _nequip_env(models: Path):
    """The runner's environment: nequip's peer folder first, benchmarks/ after it;
    ``GEOFF_PEERS`` points the package and compiled models at ``models``."""
    folder = peers_dir() / "nequip"
    path = os.pathsep.join([str(folder), str(BENCH / "peers"), str(BENCH),
                            os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, GEOFF_PEERS=str(models))
    probe = subprocess.run([sys.executable, "-c", "import nequip, pytorch_lightning, lmdb"],
                           env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"nequip's peer folder {folder} is not installed (with pytorch-lightning "
                    "and lmdb): python benchmarks/speed.py --peers nequip installs it")
    return env


PARITY = """
import json, numpy as np, nequip_peer
from speed import structure
spec = dict(dtype="float32", device="cpu", hyper=json.loads({hyper!r}))
aot, seconds = nequip_peer._compiled_calculator(
    spec, nequip_peer.check_spec(dict(spec, compile="aotinductor")))
eager = nequip_peer._eager_calculator(spec, spec["hyper"])
atoms, out = structure("cuzr", 32), []
for calc in (aot, eager):
    calc.calculate(atoms, ["energy", "forces"], ["positions"])
    out.append((float(calc.results["energy"]), calc.results["forces"].tolist()))
print(json.dumps({{"compile_s": seconds, "aot": out[0], "eager": out[1]}}))
"""


@pytest.mark.slow
def test_aot_model_from_a_trained_package_matches_eager_and_times(tmp_path):
    """~2 min on 2 cores: package (train + pack) and compile of a tiny model on the CPU."""
    import numpy as np

    env = _nequip_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", PARITY.format(hyper=json.dumps(TINY))],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["compile_s"] > 0
    # learning rate 0: the trained, packed, compiled model is NequIPGNNModel(seed=0)
    assert got["aot"][0] == pytest.approx(got["eager"][0], rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(got["aot"][1], got["eager"][1], rtol=1e-4, atol=1e-6)
    models = sorted(p.name for p in (tmp_path / "nequip_models").iterdir())
    assert "nequip-cuzr-float32-l_max1-num_features8-num_layers1-cpu-e3nn-ase-forces.nequip.pt2" in models
    assert not [m for m in models if "partial" in m]

    spec = dict(n=32, module="nequip_peer", kind="cu", dtype="float32", device="cpu",
                repeats=2, budget=1, threads=1, compile="aotinductor", hyper=TINY)
    row = subprocess.run([sys.executable, str(BENCH / "peers" / "runner.py"), json.dumps(spec)],
                         env=env, capture_output=True, text=True)
    assert row.returncode == 0, row.stderr[-2000:]
    row = json.loads(row.stdout.strip().splitlines()[-1])
    assert row["compile_s"] == pytest.approx(got["compile_s"])  # reused, not compiled again
    assert row["atoms"] == 32 and row["model_s"] > 0 and row["calc_s"] > 0
    assert row["max_dF_vs_eager"] < 1e-4  # the row's own check of the compiled model

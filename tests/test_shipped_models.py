"""The trained models in examples/models/: each loads, knows its elements and cutoff, and
reproduces the accuracy its test_metrics.json claims on freshly generated reference data of the
same kind (a handful of structures, so the bound is loose but can fail)."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import geoff
from geoff.calculators import GeoffCalculator

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
SHIPPED = sorted(p.stem for p in MODELS.glob("*.ckpt"))


def test_every_shipped_model_has_config_and_metrics():
    assert {"cu_schnet", "cu_painn", "cu_nequip", "cuzr_schnet", "cuzr_painn",
            "cuzr_nequip"} <= set(SHIPPED)
    total = sum((MODELS / f"{n}.ckpt").stat().st_size for n in SHIPPED)
    assert total < 6e6, f"shipped checkpoints take {total / 1e6:.1f} MB"
    for name in SHIPPED:
        config = yaml.safe_load((MODELS / f"{name}.config.yaml").read_text())
        metrics = json.loads((MODELS / f"{name}.test_metrics.json").read_text())
        model = geoff.load(MODELS / f"{name}.ckpt")
        assert model.model_name == config["model"] and model.cutoff == pytest.approx(config["cutoff"])
        assert metrics["forces_mae_meV_A"] > 0 and metrics["dtype"] == "float64"


@pytest.fixture(scope="module")
def cu_frames():
    from geoff.data.cu_emt import generate

    frames, _ = generate(6, seed=123)
    return frames


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("cu_")])
def test_cu_models_match_emt(name, cu_frames):
    claimed = json.loads((MODELS / f"{name}.test_metrics.json").read_text())["forces_mae_meV_A"]
    calc = GeoffCalculator(MODELS / f"{name}.ckpt", dtype="float64")
    errors = []
    for atoms in cu_frames:
        ref = atoms.get_forces()
        a = atoms.copy()
        a.calc = calc
        errors.append(np.abs(a.get_forces() - ref).mean() * 1e3)
    # new structures from the same generator: within 3x the claimed held-out MAE
    assert np.mean(errors) < 3 * claimed, (np.mean(errors), claimed)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("cuzr_")])
def test_cuzr_models_run_on_a_glass(name):
    from ase.build import bulk

    model = geoff.load(MODELS / f"{name}.ckpt")
    assert model.species == ["Cu", "Zr"]
    atoms = bulk("Cu", "fcc", a=3.9, cubic=True) * (3, 3, 3)  # 108 sites, larger than the cutoff
    rng = np.random.default_rng(0)
    symbols = np.array(["Cu"] * 108)
    symbols[rng.choice(108, 39, replace=False)] = "Zr"  # ~Cu64Zr36
    atoms.set_chemical_symbols(symbols)
    atoms.rattle(0.1, seed=1)
    atoms.calc = GeoffCalculator(MODELS / f"{name}.ckpt", dtype="float64")
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    assert np.isfinite(e) and np.isfinite(f).all()
    assert -7.0 < e / len(atoms) < -3.0  # Cu64Zr36 in the Mendelev EAM: about -5 eV/atom
    assert np.abs(f.sum(axis=0)).max() < 1e-8

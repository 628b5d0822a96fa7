"""GeoffCalculator and checkpoints."""
import os

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.stress import full_3x3_to_voigt_6_stress

import geoff
from conftest import cluster, rattled_triclinic, small_model
from geoff.calculators import GeoffCalculator
from symmetry import evaluate


def test_calculator_equals_model():
    model = small_model("schnet")
    atoms = rattled_triclinic()
    ref = evaluate(model, atoms, stress=True)
    atoms.calc = GeoffCalculator(model, dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"][0], rel=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(ref["energy"][0], rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(atoms.get_stress(), full_3x3_to_voigt_6_stress(ref["stress"][0]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(atoms.get_potential_energies(), ref["energies"], rtol=1e-12)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)


def test_recomputes_only_when_atoms_change(monkeypatch):
    model = small_model("schnet")
    calc = GeoffCalculator(model, dtype="float64")
    atoms = rattled_triclinic()
    atoms.calc = calc
    calls = []
    original = calc.model.forward
    monkeypatch.setattr(calc.model, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    e1 = atoms.get_potential_energy()
    atoms.get_forces()
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.01
    assert atoms.get_potential_energy() != e1
    assert len(calls) == 2


def test_stress_needs_3d_periodic_cell():
    atoms = cluster()
    atoms.calc = GeoffCalculator(small_model("schnet"), dtype="float64")
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="3D-periodic"):
        atoms.get_stress()


def test_unknown_element_is_named():
    atoms = bulk("Pt", "fcc", a=3.9)
    atoms.calc = GeoffCalculator(small_model("schnet"), dtype="float64")
    with pytest.raises(ValueError, match=r"'Pt' not in model species \['Cu', 'Zr'\]"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("force_head", ["conservative", "direct", "both"])
def test_checkpoint_round_trip(tmp_path, force_head):
    model = small_model("schnet", force_head=force_head)
    path = tmp_path / "m.ckpt"
    geoff.save(model, path)
    loaded = geoff.load(path)
    assert loaded.species == model.species and loaded.cutoff == model.cutoff
    assert loaded.force_head == force_head and loaded.n_layers == model.n_layers
    torch.testing.assert_close(loaded.atomic_energies, model.atomic_energies)
    a, b = evaluate(model, rattled_triclinic(), stress=True), evaluate(loaded, rattled_triclinic(), stress=True)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # the calculator takes the path directly
    atoms = rattled_triclinic()
    atoms.calc = GeoffCalculator(str(path), dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(a["energy"][0], rel=1e-12)
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        geoff.load(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable geoff checkpoint"):
        geoff.load(garbage)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a geoff checkpoint"):
        geoff.load(other)
    # weights that do not fit the architecture
    model = small_model("schnet")
    path = tmp_path / "m.ckpt"
    geoff.save(model, path)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, path)
    with pytest.raises(ValueError, match="does not match"):
        geoff.load(path)


def test_float32_calculator_close_to_float64():
    model = small_model("schnet")
    atoms = rattled_triclinic()
    atoms.calc = GeoffCalculator(model, dtype="float64")
    e64, f64 = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = GeoffCalculator(small_model("schnet"), dtype="float32")
    assert atoms.get_potential_energy() == pytest.approx(e64, rel=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), f64, atol=1e-4)

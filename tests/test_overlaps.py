"""Overlapping atoms: a clear error everywhere, a threshold from the training data, and an
option to turn the check off. (LAMMPS: tests/test_bad_decks.py, "overlapping atoms".)"""
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

import geoff
from conftest import small_model
from geoff.calculators import GeoffCalculator
from geoff.graph import atoms_to_graph
from geoff.md.failure import FailureMonitor
from geoff.structure_checks import (OVERLAP_FLOOR, OverlapError, overlap_threshold,
                                    record_training_distance, training_min_distance)

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def cu32_with_duplicate(d=0.01):
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True).repeat(2)
    atoms.positions[7] = atoms.positions[3] + [d, 0.0, 0.0]
    return atoms


@pytest.mark.parametrize("name", ["cu_schnet", "cu_painn", "cu_nequip"])
def test_shipped_models_name_the_two_atoms(name):
    atoms = cu32_with_duplicate()
    atoms.calc = GeoffCalculator(str(MODELS / f"{name}.ckpt"), dtype="float64")
    with pytest.raises(OverlapError, match=r"atoms 3 \(Cu\) and 7 \(Cu\) are 0.01 Å apart"):
        atoms.get_potential_energy()


def test_check_can_be_turned_off():
    atoms = cu32_with_duplicate(0.3)
    atoms.calc = GeoffCalculator(str(MODELS / "cu_schnet.ckpt"), dtype="float64",
                                 check_overlaps=False)
    assert np.isfinite(atoms.get_potential_energy())
    model = geoff.load(MODELS / "cu_schnet.ckpt")
    assert atoms_to_graph(atoms, model, min_distance=0)["positions"].shape == (32, 3)


def test_atom_on_its_own_periodic_image():
    atoms = bulk("Cu", "sc", a=0.3)  # a 0.3 Å cube: every atom 0.3 Å from its images
    with pytest.raises(ValueError, match="own periodic image|neighbours per atom"):
        atoms_to_graph(atoms, species=["Cu"], cutoff=1.0)


def test_threshold_from_training_distance_travels_with_the_model(tmp_path):
    model = small_model("schnet")
    assert training_min_distance(model) is None and overlap_threshold(model) == OVERLAP_FLOOR
    record_training_distance(model, 2.2)
    assert overlap_threshold(model) == pytest.approx(1.1)
    record_training_distance(model, 0.74)  # H2: the floor wins over half of it
    assert overlap_threshold(model) == OVERLAP_FLOOR
    record_training_distance(model, 2.2)
    geoff.save(model, tmp_path / "m.ckpt")
    loaded = geoff.load(tmp_path / "m.ckpt")
    assert training_min_distance(loaded) == pytest.approx(2.2)
    from geoff.export import export, read_metadata

    export(loaded, tmp_path / "m.pt")
    assert read_metadata(tmp_path / "m.pt")["config"]["min_train_distance"] == pytest.approx(2.2)
    # 1.0 Å apart: fine for the floor, an overlap for this model (threshold 1.1 Å)
    atoms = cu32_with_duplicate(1.0)
    with pytest.raises(OverlapError, match="1.1 Å overlap threshold"):
        atoms_to_graph(atoms, loaded)


def test_normalisation_records_the_shortest_training_distance():
    from geoff.training.dataset import GraphDataset
    from geoff.training.normalisation import apply, normalisation

    frames = []
    for k, d in enumerate([2.0, 1.7, 2.4]):
        a = Atoms("CuZr", positions=[[0.0, 0.0, 0.0], [d, 0.0, 0.0]])  # a dimer
        a.info["energy"] = -1.0 * k
        frames.append(a)
    data = GraphDataset.from_frames(frames, ["Cu", "Zr"], 4.0)
    norm = normalisation(data, ["Cu", "Zr"], energy_scale=1.0)
    assert norm["min_distance"] == pytest.approx(1.7)
    model = small_model("schnet")
    apply(model, norm)
    assert training_min_distance(model) == pytest.approx(1.7)


def test_readme_data_path_snippet_float32_model():
    """build_model (float32) -> atoms_to_graph -> model(graph): dtypes follow the model."""
    from geoff.potentials import build_model

    model = build_model("painn", species=["Cu", "Zr"], cutoff=5.0, force_head="conservative")
    model = model.float()
    graph = atoms_to_graph(bulk("Cu", "fcc", a=3.615, cubic=True), model)
    assert graph["positions"].dtype == torch.float32
    out = model(graph, compute_stress=True)
    assert torch.isfinite(out["energy"]).all() and out["stress"].shape == (1, 3, 3)


def test_md_monitor_fails_a_broken_start_at_step_zero():
    atoms = cu32_with_duplicate(0.05)
    monitor = FailureMonitor(atoms)  # default: from the (broken) shortest starting distance
    failure = monitor.check(0, atoms)
    assert failure is not None and failure.reason == "distance" and failure.step == 0
    assert failure.details["atoms"] == [3, 7]


def _geoff_md(*args, cwd):
    return subprocess.run([sys.executable, "-m", "geoff.cli", "md", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_geoff_md_validates_before_writing(tmp_path):
    ckpt = str(MODELS / "cu_schnet.ckpt")
    pt = bulk("Cu", "fcc", a=3.615, cubic=True).repeat(2)
    pt[0].symbol = "Pt"
    ase.io.write(tmp_path / "pt.xyz", pt)
    ase.io.write(tmp_path / "overlap.xyz", cu32_with_duplicate())
    r = _geoff_md(ckpt, "pt.xyz", "--steps", "2", "--out", "out_pt", cwd=tmp_path)
    assert r.returncode == 2 and "'Pt' not in model species" in r.stderr
    r = _geoff_md(ckpt, "overlap.xyz", "--steps", "2", "--out", "out_overlap", cwd=tmp_path)
    assert r.returncode == 2 and "atoms 3 (Cu) and 7 (Cu)" in r.stderr
    assert not (tmp_path / "out_pt").exists() and not (tmp_path / "out_overlap").exists()


def test_geoff_md_reference_potential_fails_at_step_zero(tmp_path):
    ase.io.write(tmp_path / "overlap.xyz", cu32_with_duplicate(0.05))
    r = _geoff_md("emt", "overlap.xyz", "--steps", "5", "--max-force", "1e9", "--out", "o",
                  cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "FAILED at step 0 (distance)" in r.stdout


def test_gitignore_covers_what_decks_and_demo_write():
    """The example decks write log.lammps (and log.cite), `make demo` demo-output/, `geoff md`
    md-output/: none of them may show up as untracked files."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    written = ["log.lammps", "examples/lammps/log.lammps", "examples/lammps/log.cite",
               "log.lammps.0", "demo-output/report.md", "md-output/thermo.csv"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=root,
                       capture_output=True, text=True)
    assert sorted(r.stdout.split()) == sorted(written), r.stdout + r.stderr

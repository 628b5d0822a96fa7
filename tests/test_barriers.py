"""Barrier data: the saddle machinery on an analytic potential, and a tiny glass (slow)."""
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from geoff.data.saddle import barrier_labels, centred, check_saddle, search_event


class DoubleWell(Calculator):
    """E = (x^2 - 1)^2 + 2 (y - 0.3 x)^2 + 2 z^2 (eV, Å) for a single atom: minima at
    x = ±1, a first-order saddle at the origin with barrier 1 eV."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x, y, z = self.atoms.positions[0]
        u = y - 0.3 * x
        self.results["energy"] = (x * x - 1) ** 2 + 2 * u * u + 2 * z * z
        grad = np.array([4 * x * (x * x - 1) - 1.2 * u, 4 * u, 4 * z])
        self.results["forces"] = -grad.reshape(1, 3)


def well(x):
    atoms = Atoms("Cu", positions=[[x, 0.3 * x, 0.0]])
    atoms.calc = DoubleWell()
    return atoms


def test_check_saddle_counts_negative_curvatures():
    ok, n_neg, lowest, fmax = check_saddle(well(0.0), [0], fmax=0.01)
    assert ok and n_neg == 1 and lowest < -3.0 and fmax < 1e-9
    ok, n_neg, lowest, _ = check_saddle(well(1.0), [0], fmax=0.01)
    assert not ok and n_neg == 0 and lowest > 0


def test_search_event_finds_the_saddle_and_the_other_minimum():
    rng = np.random.default_rng(0)
    res = search_event(well(1.0), [0], rng, push=0.3, fmax=0.005)
    assert res.status == "accepted", res
    assert res.barrier == pytest.approx(1.0, abs=0.01)
    assert res.n_negative == 1
    assert res.final_displacement == pytest.approx(2.0 * np.hypot(1.0, 0.3), abs=0.05)


def test_labels_and_centring():
    assert barrier_labels([0.5, np.nan, 1.5]) == (1.0, 0.5)
    assert all(np.isnan(barrier_labels([])))
    atoms = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [6, 0, 0]], cell=[20] * 3, pbc=True)
    assert centred(atoms, 0, 1, radius=3.4) and not centred(atoms, 0, 2, radius=3.4)
    assert not centred(atoms, 0, -1, radius=3.4)


@pytest.mark.slow
def test_tiny_glass_generates_labelled_atoms(tmp_path):
    """One 32-atom glass, 2 atoms, 1 attempt each, over 2 processes (about a minute on a
    loaded 2-core VM)."""
    from geoff.data import generate
    from geoff.data.io import read_dataset, read_provenance

    path = tmp_path / "b.extxyz"
    generate("cuzr-barriers", n=1, seed=0, path=path, n_atoms=32, atoms_per_glass=2,
             attempts=1, jobs=2, quench=dict(melt_ps=0.2, hold_ps=0.05, interval_ps=0.02,
                                     quench_rate_K_per_ps=2000.0))
    (frame,) = read_dataset(path)
    prov = read_provenance(path)
    mean, low = frame.arrays["barrier_mean"], frame.arrays["barrier_min"]
    assert frame.arrays["barrier_attempts"].sum() == 2
    assert sum(prov["attempt_outcomes"].values()) == 2
    labelled = np.isfinite(mean)
    assert labelled.sum() == prov["labelled_atoms"] <= 2
    assert np.all(mean[labelled] > 0) and np.all(low[labelled] <= mean[labelled])
    assert np.abs(frame.get_forces()).max() < 1e-2  # the stored glass is relaxed


def test_icosahedral_centre_and_descriptors():
    """The benchmark's structural helpers: a 13-atom icosahedron's centre is found, an FCC
    atom is not; descriptors have one finite row per atom."""
    import sys
    from pathlib import Path

    from ase.build import bulk
    from ase.cluster import Icosahedron

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from barriers_baselines import descriptors, icosahedral_centres

    ico = Icosahedron("Cu", 2)  # 13 atoms: one centre, 12 on the shell
    ico.center(vacuum=10.0)
    found = icosahedral_centres(ico, cutoff=2.9)
    assert found.sum() == 1 and found[np.argmin(np.linalg.norm(
        ico.positions - ico.positions.mean(0), axis=1))]
    fcc = bulk("Cu", "fcc", a=3.61, cubic=True) * 3
    assert not icosahedral_centres(fcc, cutoff=2.9).any()
    fcc.numbers[::4] = 40
    x = descriptors(fcc)
    assert x.shape[0] == len(fcc) and np.isfinite(x).all()


TINY_QUENCH = dict(melt_ps=0.2, hold_ps=0.05, interval_ps=0.02, quench_rate_K_per_ps=2000.0)


def test_generator_writes_each_glass_and_merges(tmp_path):
    """Two 32-atom glasses over 2 processes, 1 atom x 2 attempts each (queued as two passes):
    every glass is written to glass_dir with its records; the merge joins them, with
    statistics and a histogram."""
    from geoff.data.barrier_merge import histogram_path, merge
    from geoff.data.cuzr_barriers import generate
    from geoff.data.io import read_dataset

    frames, prov = generate(n=2, seed=3, n_atoms=32, atoms_per_glass=1, attempts=2, jobs=2,
                            quench=TINY_QUENCH, glass_dir=tmp_path / "g")
    assert [f.info["glass"] for f in frames] == [0, 1]
    assert prov["attempts"] == 4 == sum(prov["attempt_outcomes"].values())
    assert 0 <= prov["accepted_fraction"] <= prov["converged_fraction"] <= 1
    assert prov["force_calls_per_attempt"] > 10
    for frame in frames:
        assert sorted(frame.arrays["barrier_attempts"])[-2:] == [0, 2]  # one atom, twice
        labelled = np.isfinite(frame.arrays["barrier_mean"])
        assert np.array_equal(labelled, frame.arrays["n_events"] > 0)
        assert np.all(frame.arrays["barrier_mean"][labelled] > 0)
    files = sorted((tmp_path / "g").glob("glass_*.extxyz"))
    assert [f.name for f in files] == ["glass_000.extxyz", "glass_001.extxyz"]
    merged = merge(files, tmp_path / "all.extxyz")
    assert merged["attempts"] == 4 and merged["labelled_atoms"] == prov["labelled_atoms"]
    assert len(read_dataset(tmp_path / "all.extxyz")) == 2
    assert histogram_path(tmp_path / "all.extxyz").stat().st_size > 1000


def test_generator_deadline_keeps_the_glasses_without_attempts(tmp_path):
    from geoff.data.cuzr_barriers import generate

    frames, prov = generate(n=1, seed=4, n_atoms=32, atoms_per_glass=4, attempts=2,
                            quench=TINY_QUENCH, deadline_s=0.0)
    (frame,) = frames
    assert prov["attempts"] == 0 and prov["labelled_atoms"] == 0
    assert frame.arrays["barrier_attempts"].sum() == 0
    assert np.isnan(frame.arrays["barrier_mean"]).all()
    assert np.abs(frame.get_forces()).max() < 1e-3  # the glass itself is still relaxed


def test_statistics_count_outcomes_and_labels():
    from ase import Atoms

    from geoff.data.barrier_merge import statistics

    frame = Atoms("Cu3", positions=np.eye(3))
    frame.new_array("barrier_mean", np.array([0.5, np.nan, 1.5]))
    records = [{"outcomes": ["accepted", "not_converged"], "barriers": [0.5], "force_calls": 300,
                "seconds": 2.0},
               {"outcomes": ["accepted", "not_centred"], "barriers": [1.5], "force_calls": 500,
                "seconds": 2.0}]
    stats = statistics([frame], records)
    assert stats["attempts"] == 4 and stats["accepted_fraction"] == 0.5
    assert stats["converged_fraction"] == 0.75 and stats["labelled_atoms"] == 2
    assert stats["force_calls_per_attempt"] == 200 and stats["seconds_per_attempt"] == 1.0
    assert stats["barrier_mean_eV"]["max"] == 1.5 and stats["event_barriers_eV"]["n"] == 2

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

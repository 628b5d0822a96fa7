"""The torch cell list against matscipy, and the Verlet cache against fresh builds."""
import itertools
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import rattled_triclinic, small_model
from geoff.graph import atoms_to_graph, neighbour_list
from geoff.neighbours import NeighbourCache, torch_neighbour_list

PBCS = list(itertools.product([False, True], repeat=3))
# The cell list runs where the positions are: on CUDA when there is one (the calculator's
# "auto" picks it there), so every matscipy comparison runs on each device present.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def edge_set(i, j, shifts, cell):
    """{(i, j, integer image)}: shifts in Å mapped back to whole cell vectors."""
    shifts = np.asarray(shifts, dtype=np.float64)
    images = np.zeros_like(shifts) if not shifts.size else shifts @ np.linalg.pinv(cell)
    return {(int(a), int(b), *np.rint(s).astype(int)) for a, b, s in zip(i, j, images)}


def assert_same_edges(positions, cell, pbc, cutoff, device="cpu"):
    """The torch list as the calculator runs it, and the cell list alone (for structures
    small enough that the default examines all pairs), against matscipy."""
    import geoff.neighbours as nl

    default = nl.ALL_PAIRS_MAX_ATOMS
    for limits in (default, {}):
        nl.ALL_PAIRS_MAX_ATOMS = limits
        try:
            _assert_same_edges(positions, cell, pbc, cutoff, device)
        finally:
            nl.ALL_PAIRS_MAX_ATOMS = default


def _assert_same_edges(positions, cell, pbc, cutoff, device):
    ri, rj, rs = neighbour_list(positions, cell, np.array(pbc), cutoff)
    ti, tj, ts, _ = torch_neighbour_list(torch.as_tensor(positions, device=device), cell, pbc,
                                         cutoff)
    assert ti.device.type == torch.device(device).type
    ti, tj, ts = ti.cpu(), tj.cpu(), ts.cpu()
    ref = edge_set(ri, rj, rs, cell)
    got = edge_set(ti.numpy(), tj.numpy(), ts.numpy(), cell)
    assert len(ti) == len(got)  # no edge twice
    assert got == ref
    vec = positions[tj.numpy()] - positions[ti.numpy()] + ts.numpy()
    assert np.all(np.linalg.norm(vec, axis=1) < cutoff)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pbc", PBCS)
def test_triclinic_every_pbc_matches_matscipy(pbc, device):
    atoms = rattled_triclinic(seed=4)
    assert_same_edges(atoms.positions, atoms.cell.array, pbc, 4.5, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pbc", PBCS)
def test_cell_smaller_than_cutoff_matches_matscipy(pbc, device):
    atoms = bulk("Cu", "fcc", a=3.6) * (1, 2, 1)  # primitive cell ~2.5 Å, cutoff 2-3 cells
    atoms.rattle(0.05, seed=2)
    assert_same_edges(atoms.positions, atoms.cell.array, pbc, 6.0, device)


@pytest.mark.parametrize("device", DEVICES)
def test_atoms_outside_the_cell_and_slab_with_singular_cell(device):
    atoms = rattled_triclinic(seed=1)
    atoms.positions += np.array([-7.3, 11.2, 30.1])  # far outside [0, 1) in every direction
    assert_same_edges(atoms.positions, atoms.cell.array, (True, True, True), 4.0, device)
    slab = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    slab.cell[2] = 0.0
    assert_same_edges(slab.positions, slab.cell.array, (True, True, False), 4.0, device)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), pbc=st.sampled_from(PBCS), n=st.integers(1, 40),
       cutoff=st.floats(1.5, 7.0), shear=st.floats(-0.4, 0.4))
def test_random_structures_match_matscipy(seed, pbc, n, cutoff, shear, device):
    rng = np.random.default_rng(seed)
    lengths = rng.uniform(2.0, 12.0, 3)
    cell = np.diag(lengths) + shear * np.triu(rng.uniform(-1, 1, (3, 3)) * lengths.mean(), 1)
    positions = rng.uniform(-0.2, 1.2, (n, 3)) @ cell
    assert_same_edges(positions, cell, pbc, cutoff, device)


def test_atoms_to_graph_torch_equals_matscipy_graph():
    atoms = rattled_triclinic(seed=3)
    model = small_model("schnet")
    ref = atoms_to_graph(atoms, model, neighbour_list="matscipy")
    got = atoms_to_graph(atoms, model, neighbour_list="torch")
    e_ref, e_got = model(ref), model(got)
    torch.testing.assert_close(e_got["energy"], e_ref["energy"], rtol=0, atol=1e-12)
    torch.testing.assert_close(e_got["forces"], e_ref["forces"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="neighbour_list must be"):
        atoms_to_graph(atoms, model, neighbour_list="vesin")


def test_unit_mistake_is_refused():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(ValueError, match="neighbours per atom"):
        torch_neighbour_list(torch.as_tensor(atoms.positions), atoms.cell.array, [True] * 3, 40.0)


def test_cache_gives_fresh_build_results_over_md():
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    from geoff.calculators.ase import GeoffCalculator

    atoms = rattled_triclinic(seed=5)
    atoms.set_momenta(np.random.default_rng(0).normal(0, 8.0, (len(atoms), 3)))
    model = small_model("painn")
    cached = GeoffCalculator(model, dtype="float64", skin=0.4)
    fresh = GeoffCalculator(model, dtype="float64", neighbour_list="matscipy")
    atoms.calc = cached
    steps = []
    dyn = VelocityVerlet(atoms, timestep=2.0 * fs)
    dyn.attach(lambda: steps.append((atoms.get_potential_energy(), atoms.get_forces().copy(),
                                     atoms.positions.copy())))
    dyn.run(20)
    for energy, forces, positions in steps:
        probe = atoms.copy()
        probe.positions = positions
        probe.calc = fresh
        assert abs(probe.get_potential_energy() - energy) <= 1e-12
        np.testing.assert_allclose(probe.get_forces(), forces, rtol=0, atol=1e-12)
    builds = cached.neighbour_cache.builds
    assert 1 < builds < len(steps)  # reused between builds, and rebuilt when atoms moved


def test_cache_rebuilds_on_cell_change():
    atoms = rattled_triclinic(seed=6)
    cache = NeighbourCache(skin=0.5)
    cache(torch.as_tensor(atoms.positions), atoms.cell.array, atoms.pbc, 4.0)
    cache(torch.as_tensor(atoms.positions), atoms.cell.array, atoms.pbc, 4.0)
    assert cache.builds == 1
    atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)
    i, j, s, _ = cache(torch.as_tensor(atoms.positions), atoms.cell.array, atoms.pbc, 4.0)
    assert cache.builds == 2
    assert edge_set(i, j, s, atoms.cell.array) == edge_set(
        *neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.0), atoms.cell.array)
    with pytest.raises(ValueError, match="skin"):
        NeighbourCache(skin=-1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_cache_shortest_edge_is_the_overlap_checks(device):
    """The shortest kept edge that the cache hands the overlap check equals a fresh
    measurement, on a build call, a reuse call, a rebuild and with no edge kept."""
    from geoff.structure_checks import shortest_edge

    atoms = rattled_triclinic(seed=4)
    cache = NeighbourCache(skin=1.0)
    rng = np.random.default_rng(0)
    for step, jitter in enumerate([0.0, 0.05, 0.05, 1.5]):  # build, reuse, reuse, rebuild
        atoms.positions += rng.normal(0, jitter, atoms.positions.shape)
        x = torch.as_tensor(atoms.positions, device=device)
        i, j, s, (d, a, b) = cache(x, atoms.cell.array, atoms.pbc, 4.0)
        want_d, want_a, want_b = shortest_edge(x, i, j, s.to(device))
        assert d == pytest.approx(want_d, rel=1e-12) and {a, b} == {want_a, want_b}
    assert cache.builds == 2
    lone = torch.zeros(1, 3, dtype=torch.float64, device=device)  # one atom, no edges
    assert NeighbourCache(0.5)(lone, np.eye(3) * 20, [False] * 3, 4.0)[3] == (math.inf, -1, -1)


def test_overlap_found_through_the_cache_names_the_atoms():
    from geoff.calculators.ase import GeoffCalculator
    from geoff.structure_checks import OverlapError

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    calc = GeoffCalculator(small_model("schnet"), skin=0.5, neighbour_list="torch")
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.positions[5] = atoms.positions[3] + [0.1, 0.0, 0.0]  # moved far: a rebuild
    with pytest.raises(OverlapError, match=r"atoms 3 \(Cu\) and 5 \(Cu\)"):
        atoms.get_potential_energy()
    atoms.positions[5] = atoms.positions[3] + [0.6, 0.0, 0.0]
    atoms.get_potential_energy()  # 0.6 Å: above the 0.5 Å threshold, built again
    atoms.positions[5] = atoms.positions[3] + [0.4, 0.0, 0.0]  # moved 0.2 < skin / 2: reused
    builds = calc.neighbour_cache.builds
    with pytest.raises(OverlapError, match=r"atoms 3 \(Cu\) and 5 \(Cu\)"):
        atoms.get_potential_energy()
    assert calc.neighbour_cache.builds == builds


def test_calculator_skin_auto_and_one_transfer():
    """skin="auto": no cache on the CPU (matscipy), a 0.5 Å one on CUDA; the calculator's
    results (gathered into one device-to-host copy) keep their shapes and values."""
    from geoff.calculators.ase import AUTO_SKIN, GeoffCalculator

    model = small_model("painn")
    assert GeoffCalculator(model, dtype="float64").neighbour_cache is None
    assert GeoffCalculator(model, dtype="float64", skin=0.3).neighbour_cache.skin == 0.3
    with pytest.raises(ValueError, match="skin must be"):
        GeoffCalculator(model, skin="large")
    if torch.cuda.is_available():
        assert GeoffCalculator(model, device="cuda").neighbour_cache.skin == AUTO_SKIN
    atoms = rattled_triclinic(seed=7)
    atoms.calc = GeoffCalculator(model, dtype="float64")
    forces, stress = atoms.get_forces(), atoms.get_stress()
    energies = atoms.get_potential_energies()
    out = model(atoms_to_graph(atoms, model), compute_stress=True)
    np.testing.assert_allclose(forces, out["forces"].detach().numpy(), rtol=0, atol=1e-13)
    assert energies.shape == (len(atoms),) and stress.shape == (6,)
    assert abs(energies.sum() - atoms.get_potential_energy()) < 1e-10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (False,) * 3])
def test_non_finite_positions_are_refused(pbc, device):
    atoms = rattled_triclinic(seed=2)
    for bad in (np.nan, np.inf):
        positions = atoms.positions.copy()
        positions[3, 1] = bad
        with pytest.raises(ValueError, match="non-finite"):
            torch_neighbour_list(torch.as_tensor(positions, device=device), atoms.cell.array,
                                 pbc, 4.0)


@pytest.mark.parametrize("device", DEVICES)
def test_crowded_and_empty_bins_match_matscipy(device):
    """The padded bin table is as wide as the fullest bin: a dense cluster beside sparse
    atoms in a large periodic box leaves most slots empty, which must find nothing."""
    rng = np.random.default_rng(5)
    cell = np.diag([30.0, 31.0, 29.0])
    cluster = rng.normal(scale=1.2, size=(60, 3)) + 10.0
    sparse = rng.uniform(0, 1, (25, 3)) @ cell
    positions = np.concatenate([cluster, sparse])
    for pbc in [(True,) * 3, (False, True, False)]:
        assert_same_edges(positions, cell, pbc, 3.5, device)


def test_calculator_builds_a_new_structure_without_trying_the_old_list():
    """A new structure (every atom moved beyond skin / 2) is seen to be one on the host, so
    the list is rebuilt without first being filtered on the device; a small move reuses it."""
    from geoff.calculators.ase import GeoffCalculator

    atoms = rattled_triclinic(seed=8)
    calc = GeoffCalculator(small_model("schnet"), dtype="float64", neighbour_list="torch",
                           skin=0.5, skin_edges="filter")
    cache = calc.neighbour_cache
    passes = []
    edges = cache._edges
    cache._edges = lambda *a: passes.append(a[2] is not None) or edges(*a)
    calc.get_forces(atoms)
    moved = atoms.copy()
    moved.positions += [0.6, 0.0, 0.0]
    calc.get_forces(moved)
    assert cache.builds == 2 and passes == [False, False]  # two builds, no reuse attempt
    nudged = moved.copy()
    nudged.positions[0] += [0.05, 0.0, 0.0]
    forces = calc.get_forces(nudged)
    assert cache.builds == 2 and passes[-1] is True  # reused: filtered with the moved check
    fresh = GeoffCalculator(small_model("schnet"), dtype="float64").get_forces(nudged)
    np.testing.assert_allclose(forces, fresh, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("margin", [-0.01, 0.01])
def test_all_pairs_and_cell_list_agree_with_matscipy(margin, device, monkeypatch):
    """A periodic cell two cutoffs high (all pairs under the minimum image) and one just
    below (the cell list), triclinic, both paths against matscipy; the path taken is checked."""
    import geoff.neighbours as nl

    rng = np.random.default_rng(11)
    cell = np.array([[9.0, 0.0, 0.0], [2.5, 8.5, 0.0], [-1.5, 2.0, 9.5]])
    positions = rng.uniform(0, 1, (90, 3)) @ cell
    volume = abs(np.linalg.det(cell))
    heights = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    cutoff = heights.min() / 2.0 - margin  # margin > 0: every height >= 2 cutoff
    taken = []
    all_pairs = nl._all_pairs
    monkeypatch.setattr(nl, "_all_pairs", lambda *a: taken.append(1) or all_pairs(*a))
    monkeypatch.setattr(nl, "ALL_PAIRS_MAX_ATOMS", {"cpu": 2048, "cuda": 2048})
    assert_same_edges(positions, cell, (True,) * 3, cutoff, device)  # and the cell list
    assert len(taken) == (1 if margin > 0 else 0)
    assert nl.all_pairs_apply(cell, (True,) * 3, cutoff) == (margin > 0)


@pytest.mark.parametrize("device", DEVICES)
def test_a_small_molecule_takes_all_pairs_without_a_bounding_box(device, monkeypatch):
    import geoff.neighbours as nl

    positions = np.random.default_rng(3).uniform(0, 8, (40, 3))
    monkeypatch.setattr(nl, "_search_cell", lambda *a: pytest.fail("bounding box read"))
    i, j, shifts, images = torch_neighbour_list(torch.as_tensor(positions, device=device),
                                                np.zeros((3, 3)), (False,) * 3, 3.0)
    ri, rj, _ = neighbour_list(positions, np.zeros((3, 3)), np.zeros(3, bool), 3.0)
    assert set(zip(i.tolist(), j.tolist())) == set(zip(ri.tolist(), rj.tolist()))
    assert len(i) == len(ri) and not shifts.abs().any() and not images.any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("periodic", [True, False])
def test_all_pairs_of_replicas_match_matscipy_replica_by_replica(periodic, device):
    """R replicas at once: a replica's atoms meet only each other, with their own images."""
    from geoff.neighbours import all_pairs

    rng = np.random.default_rng(5)
    cell = np.array([[10.0, 0.0, 0.0], [3.0, 9.5, 0.0], [1.0, -2.0, 10.5]])
    pbc = (periodic,) * 3
    n, replicas, cutoff = 30, 4, 4.0
    x = rng.uniform(-0.2, 1.2, (replicas, n, 3)) @ cell  # some atoms outside the cell
    i, j, shifts, images = (t.cpu().numpy() for t in all_pairs(
        torch.as_tensor(x, device=device), cell, pbc, cutoff))
    np.testing.assert_allclose(shifts, images @ cell, atol=1e-12)
    for r in range(replicas):
        mine = (i >= r * n) & (i < (r + 1) * n)
        assert np.all((j[mine] >= r * n) & (j[mine] < (r + 1) * n))
        ref = edge_set(*neighbour_list(x[r], cell, np.array(pbc), cutoff), cell)
        got = edge_set(i[mine] - r * n, j[mine] - r * n, shifts[mine], cell)
        assert got == ref and mine.sum() == len(ref)


def test_all_pairs_refuses_cells_where_it_is_not_exact():
    from geoff.neighbours import all_pairs, all_pairs_apply

    x = torch.zeros(2, 3, dtype=torch.float64)
    x[1, 0] = 1.0
    cell = np.eye(3) * 7.0
    assert all_pairs_apply(cell, (True,) * 3, 3.49) and not all_pairs_apply(cell, (True,) * 3, 3.6)
    assert not all_pairs_apply(cell, (True, True, False), 1.0)  # a slab: the cell list
    assert all_pairs_apply(np.zeros((3, 3)), (False,) * 3, 100.0)
    for pbc, cutoff in [((True,) * 3, 3.6), ((True, False, True), 1.0)]:
        with pytest.raises(ValueError, match="torch_neighbour_list"):
            all_pairs(x, cell, pbc, cutoff)
    with pytest.raises(ValueError, match="non-finite"):
        all_pairs(torch.tensor([[0.0, 0.0, 0.0], [math.nan, 0.0, 0.0]]), cell, (True,) * 3, 3.0)

"""Edges beyond the cutoff contribute exactly nothing, in every geoff model.

That is what lets ``GeoffCalculator(skin_edges="keep")`` hand the model a Verlet list
unfiltered (``NeighbourCache(filter_edges=False)``) and what CUDA-graph padding edges rely
on: each model's envelope is exactly zero from the cutoff on, and so are its derivatives.
"""
import numpy as np
import pytest
import torch
from ase.build import molecule

from conftest import VARIANTS, rattled_triclinic, small_model
from geoff.graph import add_edge_pairs, atoms_to_graph
from geoff.neighbours import NeighbourCache, torch_neighbour_list
from geoff.potentials import available_models
from geoff.potentials.radial_table import tabulate_radial

MODELS = sorted(available_models()) + sorted(VARIANTS)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SKIN = 0.7  # Å beyond the 4 Å cutoff of the test models: about twice the edges


def edge_set(i, j, shifts) -> set:
    """{(i, j, shift rounded to 1e-6 Å)} of a neighbour list, on the host."""
    rounded = np.round(shifts.cpu().numpy(), 6)
    return {(int(a), int(b), tuple(r)) for a, b, r in zip(i.cpu(), j.cpu(), rounded)}


def skin_list(positions, cell, pbc, cutoff):
    return torch_neighbour_list(positions, cell, pbc, cutoff + SKIN)[:3]


def structures():
    cluster = molecule("CH3CH2OH")
    cluster.set_chemical_symbols(["Cu" if s == "C" else "Zr" for s in
                                  cluster.get_chemical_symbols()])
    cluster.positions *= 1.6  # bonds of ~2 Å: a metal-like cluster, no overlaps
    return {"triclinic": rattled_triclinic(seed=2), "cluster": cluster}


def outputs(model, graph, stress):
    out = model(graph, compute_stress=stress)
    keys = ["energy", "energies", "forces"] + (["stress"] if stress else [])
    return {k: out[k].detach() for k in keys}


@pytest.mark.parametrize("tabulated", [False, True], ids=["networks", "radial tables"])
@pytest.mark.parametrize("where", ["triclinic", "cluster"])
@pytest.mark.parametrize("name", MODELS)
def test_edges_beyond_the_cutoff_change_nothing(name, where, tabulated):
    model = small_model(name)
    if tabulated and not tabulate_radial(model):
        pytest.skip(f"{name} has no radial table")
    atoms = structures()[where]
    periodic = bool(atoms.pbc.all())
    exact = atoms_to_graph(atoms, model, neighbour_list="torch")
    wide = atoms_to_graph(atoms, model, neighbour_list=skin_list)
    assert wide["edge_index"].shape[1] > exact["edge_index"].shape[1]
    want = outputs(model, exact, periodic)
    for graph in (wide, add_edge_pairs(wide)):
        got = outputs(model, graph, periodic)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-12, msg=key)


@pytest.mark.parametrize("device", DEVICES)
def test_unfiltered_cache_returns_the_whole_verlet_list(device):
    atoms = rattled_triclinic(seed=5)
    x = torch.as_tensor(atoms.positions, device=device)
    filtered, whole = NeighbourCache(0.5), NeighbourCache(0.5, filter_edges=False)
    i, j, s, short = filtered(x, atoms.cell.array, atoms.pbc, 4.0)
    wi, wj, ws, wshort, pairs = whole(x, atoms.cell.array, atoms.pbc, 4.0)
    full = torch_neighbour_list(x, atoms.cell.array, atoms.pbc, 4.5)
    assert wi.shape[0] == full[0].shape[0] > i.shape[0]
    assert wi.device == x.device and i.device == x.device
    assert wshort == pytest.approx(short) and short[0] < 4.0
    moved = x + 0.01
    assert whole(moved, atoms.cell.array, atoms.pbc, 4.0)[0].shape == wi.shape  # reused
    assert whole.builds == 1
    edge_pair, pair_first = pairs()
    assert pairs()[0] is edge_pair  # computed once per build
    assert edge_pair.shape == wi.shape and 2 * pair_first.shape[0] == wi.shape[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("filter_edges", [True, False])
def test_cache_on_cuda_gives_the_cpu_answers(filter_edges):
    """The GPU path (the moved flag and shortest edge read back with the filter's nonzero,
    or in one small copy) against the CPU path, over reuses and a rebuild."""
    atoms = rattled_triclinic(seed=8)
    caches = {d: NeighbourCache(0.6, filter_edges=filter_edges) for d in ("cpu", "cuda")}
    rng = np.random.default_rng(1)
    for jitter in (0.0, 0.05, 0.05, 0.8):
        atoms.positions += rng.normal(0, jitter, atoms.positions.shape)
        got = {d: c(torch.as_tensor(atoms.positions, device=d), atoms.cell.array, atoms.pbc,
                    4.0) for d, c in caches.items()}
        cpu, gpu = got["cpu"], got["cuda"]
        assert gpu[3][0] == pytest.approx(cpu[3][0], rel=1e-12)
        assert edge_set(*gpu[:3]) == edge_set(*cpu[:3])  # same edges, any order
    assert caches["cuda"].builds == caches["cpu"].builds == 2


@pytest.mark.parametrize("name", ["mace", "schnet"])
def test_calculator_keep_with_edge_pairs_computes_pairs_once_per_build(name, monkeypatch):
    import geoff.graph
    from ase.build import bulk

    from geoff.calculators.ase import GeoffCalculator

    counted = []
    real = geoff.graph.edge_pairs
    monkeypatch.setattr(geoff.graph, "edge_pairs",
                        lambda *a: (counted.append(1), real(*a))[1])
    results = {}
    for mode in ("filter", "keep"):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
        atoms.rattle(0.05, seed=3)
        calc = GeoffCalculator(small_model(name), dtype="float64", skin=0.5,
                               neighbour_list="torch", edge_pairs=True, skin_edges=mode)
        atoms.calc = calc
        counted.clear()
        out = []
        for step in range(4):
            atoms.positions[step] += 0.02  # moved, within the skin: the list is reused
            out.append((atoms.get_potential_energy(), atoms.get_forces().copy()))
        results[mode] = out
        assert calc.neighbour_cache.builds == 1
        assert len(counted) == (4 if mode == "filter" else 1)
    for (e1, f1), (e2, f2) in zip(results["filter"], results["keep"]):
        assert abs(e1 - e2) <= 1e-12
        np.testing.assert_allclose(f1, f2, rtol=0, atol=1e-12)


def test_calculator_keep_equals_filter_over_md():
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    from geoff.calculators.ase import GeoffCalculator

    trajectories = {}
    for mode in ("filter", "keep"):
        atoms = rattled_triclinic(seed=7)
        atoms.set_momenta(np.random.default_rng(0).normal(0, 2.0, (len(atoms), 3)))
        calc = GeoffCalculator(small_model("painn"), dtype="float64", skin=0.4,
                               neighbour_list="torch", skin_edges=mode)
        atoms.calc = calc
        frames = []
        dyn = VelocityVerlet(atoms, timestep=2.0 * fs)
        dyn.attach(lambda: frames.append((atoms.get_potential_energy(),
                                          atoms.get_forces().copy())))
        dyn.run(25)
        trajectories[mode] = frames
        assert calc.neighbour_cache.builds > 1  # rebuilt while the run went on
        if mode == "keep":  # the Graph kept on the device between steps (geoff.step_graph)
            assert 0 < calc.step_graph.reused < 26
    for (e1, f1), (e2, f2) in zip(trajectories["filter"], trajectories["keep"]):
        assert abs(e1 - e2) <= 1e-11
        np.testing.assert_allclose(f1, f2, rtol=0, atol=1e-11)


def test_keep_still_refuses_overlaps_and_bad_settings():
    from ase.build import bulk

    from geoff.calculators.ase import GeoffCalculator
    from geoff.structure_checks import OverlapError

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.calc = GeoffCalculator(small_model("schnet"), skin=0.5, neighbour_list="torch",
                                 skin_edges="keep")
    atoms.get_potential_energy()
    atoms.positions[5] = atoms.positions[3] + [0.1, 0.0, 0.0]
    with pytest.raises(OverlapError, match=r"atoms 3 \(Cu\) and 5 \(Cu\)"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="skin_edges must be .auto., .filter. or .keep."):
        GeoffCalculator(small_model("schnet"), skin=0.5, skin_edges="mask")
    with pytest.raises(ValueError, match="needs a skin"):
        GeoffCalculator(small_model("schnet"), skin=0.0, skin_edges="keep")

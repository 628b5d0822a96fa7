"""CUDA graphs with padded buckets (geoff/cuda_graphs.py): padding changes no result, buckets,
fallbacks and the option plumbing, on the CPU (``pad_only``: the padded static-buffer path
without capture); the captured path itself against eager on a GPU when there is one."""
import numpy as np
import pytest
import torch
from ase.build import molecule

from conftest import cluster, rattled_triclinic, small_model, verlet_run
from geoff.cuda_graphs import (REFUSED, GraphedModel, bucket_size, graphed, pad_graph,
                               refusal, structure_bucket, unpad)
from geoff.graph import atoms_to_graph, batch_graphs

CAPTURED = ["schnet", "painn", "egnn", "nequip", "mace", "symgnn"]
REFUSED_MODELS = ["dimenet", "gemnet", "faenet"]


def _graph(model, atoms):
    return atoms_to_graph(atoms, model, min_distance=0.0)


def _close(out, ref, keys, tol=1e-12):
    for key in keys:
        np.testing.assert_allclose(out[key].detach().numpy(), ref[key].detach().numpy(),
                                   rtol=0, atol=tol, err_msg=key)
        assert out[key].shape == ref[key].shape, key


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 100, 999, 20_000])
def test_bucket_size_covers_and_bounds_padding(n):
    size = bucket_size(n, 32)
    assert size >= n and size >= 32 and size % 8 == 0
    assert size <= max(32, 1.25 * n + 8)  # at most 25 % (plus the rounding to 8)
    assert bucket_size(size, 32) == size  # a bucket size is its own bucket


def test_structure_bucket_keeps_a_spare_structure():
    assert [structure_bucket(b) for b in (1, 2, 3, 4, 7, 8)] == [2, 4, 4, 8, 8, 16]


@pytest.mark.parametrize("name", CAPTURED)
def test_padding_changes_no_result(name):
    """float64, 1e-12: energy, per-atom energies, forces, stress of a periodic cell and a
    cluster batched together (two real structures plus the padding one)."""
    model = small_model(name, force_head="both" if name in ("schnet", "painn") else
                        "conservative")
    graph = batch_graphs([_graph(model, rattled_triclinic()), _graph(model, cluster())])
    ref = model(graph, compute_stress=True)
    n, e, b = graph["positions"].shape[0], graph["edge_index"].shape[1], 2
    padded = pad_graph(graph, bucket_size(n + 1, 32) + 7, bucket_size(e, 256) + 50, 4,
                       model.cutoff)
    out = unpad(model(padded, compute_stress=True), n, b)
    assert set(out) == set(ref)
    _close(out, ref, ref.keys())


@pytest.mark.parametrize("name", CAPTURED)
def test_bucket_reuse_overwrites_stale_rows(name):
    """A big graph then a smaller one in the same bucket: nothing of the first survives."""
    model = small_model(name)
    runner = GraphedModel(model, pad_only=True)
    big, small = rattled_triclinic(n=(2, 2, 3)), rattled_triclinic(seed=1)
    for atoms in (big, small, big):
        graph = _graph(model, atoms)
        _close(runner(graph), model(graph), ["energy", "energies", "forces"])
    assert len(runner.buckets) <= 2 and runner.stats["eager"] == 0


def test_refilled_buffers_equal_a_fresh_padding():
    """Buffers filled with other graphs first (more and fewer atoms, edges, structures) hold
    exactly what a fresh padding of the last graph holds."""
    from geoff.cuda_graphs import PaddedInputs

    model = small_model("schnet")
    one = _graph(model, rattled_triclinic())
    two = batch_graphs([_graph(model, rattled_triclinic(seed=1)), _graph(model, cluster())])
    fewer_edges = {**one, "edge_index": one["edge_index"][:, :-9], "shifts": one["shifts"][:-9]}
    inputs = PaddedInputs(64, 2048, 4, model.cutoff, torch.float64, torch.device("cpu"))
    for graph in (two, one, fewer_edges, one, two, one):
        inputs.fill(graph)
        fresh = pad_graph(graph, 64, 2048, 4, model.cutoff)
        for key, value in fresh.items():
            assert torch.equal(inputs.graph[key], value), key


def test_fill_skips_only_the_very_tensor_copied_last_and_unchanged():
    from geoff.cuda_graphs import PaddedInputs

    model = small_model("schnet")
    one = _graph(model, rattled_triclinic())
    species = one["species"].clone()
    graph = {**one, "species": species}
    inputs = PaddedInputs(64, 2048, 4, model.cutoff, torch.float64, torch.device("cpu"))
    inputs.fill(graph)
    buffer = inputs.graph["species"]
    buffer[0] = 7  # a marker that only a copy overwrites
    inputs.fill(graph)
    assert buffer[0] == 7  # the same tensor, unchanged since: not copied again
    species[0] = 1  # changed in place: copied
    inputs.fill(graph)
    assert buffer[0] == 1
    buffer[0] = 7
    inputs.fill({**graph, "species": species.clone()})  # equal values, another tensor: copied
    assert buffer[0] == 1
    assert torch.equal(inputs.graph["positions"][:len(species)], one["positions"])


@pytest.mark.parametrize("name", REFUSED_MODELS)
def test_refused_models_run_eagerly(name):
    model = small_model(name)
    assert refusal(model) is not None and type(model.representation).__name__ in REFUSED
    runner = GraphedModel(model, pad_only=True)
    graph = _graph(model, rattled_triclinic())
    _close(runner(graph), model(graph), ["energy", "forces"], tol=0.0)
    assert runner.stats["eager"] == 1 and not runner.buckets


def test_fallbacks_to_eager():
    model = small_model("schnet")
    graph = _graph(model, rattled_triclinic())
    on_cpu = GraphedModel(model)  # no pad_only: the CPU has nothing to capture
    on_cpu(graph)
    assert on_cpu.stats["eager"] == 1 and not on_cpu.buckets
    small_cap = GraphedModel(model, max_atoms=4, pad_only=True)
    small_cap(graph)
    assert small_cap.stats["eager"] == 1
    lammps = GraphedModel(model, pad_only=True)
    lammps({**graph, "n_local": torch.tensor([len(graph["positions"])])})
    assert lammps.stats["eager"] == 1
    jacobian = GraphedModel(model, pad_only=True)
    jacobian({**graph, "positions": graph["positions"].clone().requires_grad_(True)})
    assert jacobian.stats["eager"] == 1
    model.train()
    training = GraphedModel(model, pad_only=True)
    assert training.refused is not None
    model.eval()


def test_chunked_sizes_run_eagerly():
    """A graph above edge_chunk would take the checkpointed path (host syncs)."""
    from geoff.potentials.chunking import set_edge_chunk

    model = set_edge_chunk(small_model("painn"), 64)
    runner = GraphedModel(model, pad_only=True)
    graph = _graph(model, rattled_triclinic())
    _close(runner(graph), model(graph), ["energy", "forces"], tol=0.0)
    assert runner.stats["eager"] == 1


def test_bucket_cap_drops_least_recently_used():
    model = small_model("schnet")
    runner = GraphedModel(model, max_buckets=2, pad_only=True)
    graphs = [_graph(model, rattled_triclinic(n=n)) for n in [(2, 2, 2), (3, 3, 3), (4, 4, 4)]]
    keys = [runner._key(graph, True, False) for graph in graphs]
    assert len(set(keys)) == 3
    for graph in graphs:
        _close(runner(graph), model(graph), ["energy", "forces"])
    assert list(runner.buckets) == keys[1:]
    runner(graphs[1])  # used again: now the most recent
    assert list(runner.buckets) == [keys[2], keys[1]]


def test_capture_after_runs_a_bucket_eagerly_until_it_repeats():
    model = small_model("schnet")
    runner = GraphedModel(model, pad_only=True, capture_after=2)
    first, second = (_graph(model, rattled_triclinic(seed=s)) for s in (1, 2))
    _close(runner(first), model(first), ["energy", "forces"])
    assert not runner.buckets and runner.stats["eager"] == 1
    _close(runner(second), model(second), ["energy", "forces"])
    assert len(runner.buckets) == 1 and runner.stats["eager"] == 1
    assert graphed(model, "auto", "cpu") is model  # the CPU: nothing to capture


def test_failed_capture_is_remembered_and_runs_eagerly(monkeypatch):
    import geoff.cuda_graphs as cg

    def broken(self, call, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cg.CapturePool, "capture", broken)
    model = small_model("schnet")
    runner = GraphedModel(model)
    runner.pad_only = False
    graph = _graph(model, rattled_triclinic())
    key = runner._key({**graph}, True, False)
    assert key is None  # the CPU: never captured, so force the capture path below
    monkeypatch.setattr(GraphedModel, "_key", lambda self, g, f, s: (64, 256, 2, f, s,
                                                                       torch.float64, "cpu"))
    with pytest.warns(RuntimeWarning, match="capture failed"):
        out = runner(graph)
    _close(out, model(graph), ["energy", "forces"], tol=0.0)
    runner(graph)  # remembered: no second attempt, no second warning
    assert runner.stats["failed"] == 1 and runner.stats["eager"] == 2


def test_graphed_option():
    model = small_model("schnet")
    assert graphed(model, "auto", "cpu") is model and graphed(model, True, "cpu") is model
    assert graphed(model, False, "cuda") is model
    assert graphed(small_model("dimenet"), "auto", "cuda").__class__ is not GraphedModel
    with pytest.raises(ValueError, match="cuda_graphs must be"):
        graphed(model, "yes", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", CAPTURED)
def test_captured_equals_eager_on_gpu(name):
    from geoff.inference import frozen

    model = frozen(small_model(name), "cuda", "float64")
    runner = GraphedModel(model)
    for atoms in (rattled_triclinic(), rattled_triclinic(seed=2), molecule("CH3CH2OH")):
        atoms = atoms.copy()
        atoms.set_chemical_symbols(["Cu"] * len(atoms))
        graph = atoms_to_graph(atoms, model, min_distance=0.0)
        _close({k: v.cpu() for k, v in runner(graph).items()},
               {k: v.cpu() for k, v in model(graph).items()}, ["energy", "forces"], 1e-10)
    assert runner.stats["captures"] >= 1 and runner.stats["replays"] == 3


def _padded_calc(model, **kwargs):
    """A calculator whose model runs the padded bucket path (the CPU stand-in of capture)."""
    from geoff.calculators import GeoffCalculator

    calc = GeoffCalculator(model, dtype="float64", cuda_graphs=True, **kwargs)
    assert calc.run_model is calc.model  # the CPU: eager
    calc.run_model = GraphedModel(calc.model, pad_only=True)
    return calc


@pytest.mark.parametrize("skin, skin_edges", [(0.0, "filter"), (0.5, "filter"), (0.5, "keep")])
def test_calculator_padded_path_in_md_with_skin(skin, skin_edges):
    """Verlet steps with the padded path (and a neighbour list reused with a skin, filtered
    or whole with the Graph kept between steps) follow the eager calculator: edges change
    between steps, buckets are reused."""
    from geoff.calculators import GeoffCalculator

    model = small_model("painn")
    runs = []
    for calc in (GeoffCalculator(model, dtype="float64", skin=skin),
                 _padded_calc(model, skin=skin, skin_edges=skin_edges)):
        atoms = rattled_triclinic()
        energies, forces = verlet_run(atoms, calc)
        runs.append((energies, forces, atoms.get_stress(), calc))
    (e0, f0, s0, _), (e1, f1, s1, padded) = runs
    np.testing.assert_allclose(e1, e0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s1, s0, rtol=0, atol=1e-12)
    assert padded.run_model.stats["eager"] == 0 and len(padded.run_model.buckets) >= 2
    assert (padded.step_graph is not None and padded.step_graph.reused > 0) \
        == (skin_edges == "keep")


def test_calculator_cuda_graphs_option_checked():
    from geoff.calculators import GeoffCalculator

    with pytest.raises(ValueError, match="cuda_graphs must be"):
        GeoffCalculator(small_model("schnet"), cuda_graphs="on")


def test_batched_forces_padded_path_with_a_lost_replica():
    """R replicas through the padded path equal the eager batch, also when one replica's
    positions are NaN (fewer structures: another bucket)."""
    from geoff.md.replica_forces import BatchedForces

    atoms = molecule("CH3CH2OH")
    model = small_model("schnet", species=("C", "H", "O"), force_head="both")
    eager = BatchedForces(model, atoms, "cpu", "float64", cuda_graphs="auto")
    padded = BatchedForces(model, atoms, "cpu", "float64", cuda_graphs=True)
    padded.run_model = GraphedModel(padded.model, pad_only=True)
    rng = np.random.default_rng(0)
    positions = atoms.positions + rng.normal(0, 0.05, (4, len(atoms), 3))
    positions[2, 0, 0] = np.nan
    for call in ("__call__", "split", "direct"):
        for x in (positions[[0, 1, 3]], positions):
            ref, out = getattr(eager, call)(x), getattr(padded, call)(x)
            for a, b in zip(out, ref):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-10, equal_nan=True)
    assert padded.run_model.stats["eager"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("forces", ["conservative", "direct", "mts"])
def test_md_through_captured_graphs_follows_eager_on_gpu(forces):
    """The MD harness (`geoff md`'s runner) with its CUDA default, `cuda_graphs="auto"`, for each force
    mode (MTS calls the calculator for direct forces alone between conservative calls: two
    buckets per size), follows the eager run step by step; the Graph kept between steps
    (skin_edges="auto" on CUDA) and the padded replays together."""
    from ase.build import bulk

    from geoff.md.runners import run_md

    model = small_model("painn", force_head="both")
    runs = []
    for calculator in ({"cuda_graphs": False}, {}):  # eager, then the harness's CUDA default
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.rattle(0.05, seed=1)
        runs.append(run_md(model, atoms, steps=24, forces=forces, mts_steps=3, device="cuda",
                           dtype="float64", log_every=1, seed=3, temperature_K=600.0,
                           calculator=calculator))
    eager, captured = runs
    assert not eager.failed and not captured.failed
    assert captured.steps_done == eager.steps_done == 24
    for key in ("epot", "ekin", "etot"):
        np.testing.assert_allclose(captured.thermo[key], eager.thermo[key], rtol=0, atol=1e-9,
                                   err_msg=key)

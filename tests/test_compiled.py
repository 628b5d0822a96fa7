"""torch.compile (geoff/compiled.py): compiled vs eager energy, forces and stress, bounded
recompilation over MD steps, and the refusals. Compiling costs tens of seconds on 2 cores:
the fast suite compiles one small SchNet once (through the calculator); the per-model
agreement in float64 and float32 is ``slow``."""
import numpy as np
import pytest
import torch

from conftest import rattled_triclinic, small_model
from geoff.calculators import GeoffCalculator
from geoff.compiled import CompiledModel, compiled
from geoff.graph import atoms_to_graph
from geoff.inference import frozen

KEYS = ("energy", "energies", "forces", "stress")


@pytest.fixture(scope="module")
def schnet_calculators():
    """(eager, compiled) float64 calculators of one small SchNet; compiled on first use."""
    model = small_model("schnet")
    return (GeoffCalculator(model, dtype="float64"),
            GeoffCalculator(model, dtype="float64", compile=True))


def _results(calc, atoms):
    calc.calculate(atoms, ["energy", "forces", "stress"], ["positions"])
    return {k: np.asarray(calc.results[k]) for k in KEYS}


def test_calculator_compiled_equals_eager_over_md_steps_with_few_recompilations(
        schnet_calculators):
    """float64 to 1e-10 at every step of 10 displacement steps whose edge counts change; the
    graphs compiled after the first call stay within a small fixed number (dynamic shapes)."""
    eager, fast = schnet_calculators
    assert isinstance(fast.run_model, CompiledModel)
    atoms = rattled_triclinic(n=(2, 2, 3))
    rng = np.random.default_rng(1)
    edges, first_graphs = set(), None
    for step in range(11):
        out, ref = _results(fast, atoms), _results(eager, atoms)
        for k in KEYS:
            np.testing.assert_allclose(out[k], ref[k], rtol=0,
                                       atol=1e-10 * max(1.0, np.abs(ref[k]).max()), err_msg=k)
        edges.add(int(fast.graph(atoms)["edge_index"].shape[1]))
        if step == 0:
            first_graphs = fast.run_model.stats["graphs"]
            assert first_graphs > 0  # something was compiled (not a silent eager run)
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    assert len(edges) >= 3, edges  # the edge count did change from step to step
    assert fast.run_model.stats["graphs"] - first_graphs <= 2, fast.run_model.stats
    assert fast.run_model.stats["eager"] == 0


def test_training_mode_and_positions_with_grad_are_refused():
    model = small_model("schnet")  # small_model returns it in eval mode
    with pytest.raises(ValueError, match="training mode"):
        CompiledModel(model.train())
    runner = CompiledModel(frozen(model, "cpu", "float64"))
    with pytest.raises(ValueError, match="training mode"):
        runner.train()
    graph = atoms_to_graph(rattled_triclinic(), runner)  # attributes come from the model
    graph["positions"].requires_grad_(True)
    with pytest.raises(ValueError, match="require grad"):
        runner(graph)
    assert runner.stats["calls"] == 0  # refused before anything compiled


def test_option_plumbing():
    model = frozen(small_model("schnet"), "cpu", "float64")
    assert compiled(model, False) is model
    assert isinstance(compiled(model, True), CompiledModel)
    with pytest.raises(ValueError, match="compile must be True or False"):
        compiled(model, "yes")
    dimenet = frozen(small_model("dimenet"), "cpu", "float64")
    with pytest.warns(RuntimeWarning, match="runs eagerly"):
        assert compiled(dimenet, True) is dimenet


def test_chunked_sizes_run_eagerly():
    """A size on the chunked path (its chunk bounds are host data) is not compiled."""
    from geoff.potentials.chunking import set_edge_chunk

    model = set_edge_chunk(frozen(small_model("schnet"), "cpu", "float64"), 16)
    runner = CompiledModel(model)
    graph = atoms_to_graph(rattled_triclinic(), model)
    out = runner(graph)
    np.testing.assert_allclose(out["forces"].numpy(), model(graph)["forces"].numpy())
    assert runner.stats == {"calls": 0, "graphs": 0, "eager": 1}


def _max_rel(out, ref, key):
    out, ref = out[key].detach().double(), ref[key].detach().double()
    return float((out - ref).abs().max()) / float(ref.abs().max().clamp_min(1e-30))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["schnet", "painn", "nequip", "mace"])
def test_compiled_equals_eager_float64_and_float32(name):
    """float64: 1e-10 relative; float32: the compiled error against float64 eager is at most
    4x eager float32's own (+1e-7), i.e. round-off, not a different model."""
    base = small_model(name)
    atoms = rattled_triclinic(n=(2, 2, 3))
    exact = frozen(base, "cpu", "float64")
    ref64 = exact(atoms_to_graph(atoms, exact), compute_stress=True)
    for dtype, dt in (("float64", torch.float64), ("float32", torch.float32)):
        model = frozen(base, "cpu", dtype)
        graph = atoms_to_graph(atoms, model, dtype=dt)
        out = CompiledModel(model)(graph, compute_stress=True)
        eager = model(graph, compute_stress=True)
        for key in KEYS:
            err = _max_rel(out, ref64, key)
            if dtype == "float64":
                assert err <= 1e-10, (key, err)
            else:
                own = _max_rel(eager, ref64, key)
                assert err <= 4 * own + 1e-7, (key, err, own)

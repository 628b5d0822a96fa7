"""Edge chunking with recomputation (``geoff/potentials/chunking.py``) must not move results.

Every model that sums messages through ``EdgeMessages`` gives the same energies, forces and
stress chunked (a few edges per chunk, recomputed in the backward pass) as on the plain path,
to float64 round-off; the training gradient (double backward through the forces) too; a
TorchScript export of a chunked model runs the plain path and agrees.
"""
import pytest
import torch

from conftest import rattled_triclinic, small_model
from geoff.graph import atoms_to_graph
from geoff.potentials.chunking import EdgeMessages, set_edge_chunk

pytestmark = pytest.mark.usefixtures("one_thread")

CHUNKED = ["schnet", "painn", "nequip", "mace"]
CHUNK = 37  # edges per chunk: many uneven chunks (the last one shorter) on a small cell


def _graph(model):
    return atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", CHUNKED)
def test_every_message_layer_is_chunkable(name):
    model = small_model(name)
    layers = [m for m in model.modules() if isinstance(m, EdgeMessages)]
    assert len(layers) == model.n_layers
    set_edge_chunk(model, 0)
    assert all(m.edge_chunk == 0 for m in layers)


@pytest.mark.parametrize("name", CHUNKED)
def test_chunked_equals_plain_energy_forces_stress(name):
    model = small_model(name)
    graph = _graph(model)
    assert graph["edge_index"].shape[1] > 3 * CHUNK
    plain = set_edge_chunk(model, 0)(graph, compute_stress=True)
    chunked = set_edge_chunk(model, CHUNK)(graph, compute_stress=True)
    for key in ("energy", "energies", "forces", "stress"):
        _close(chunked[key], plain[key])
    assert plain["forces"].abs().max() > 1e-6  # 1e6 x atol: a real comparison, not of zeros


def _loss_gradients(model, graph):
    """Training's gradient: an energy + force loss through create_graph=True forces."""
    model.train()
    model.zero_grad()
    out = model(graph)
    loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum()
    loss.backward()
    model.eval()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("name", ["schnet", "mace"])
def test_chunked_training_gradients_equal_plain(name):
    model = small_model(name)
    graph = _graph(model)
    plain = _loss_gradients(set_edge_chunk(model, 0), graph)
    chunked = _loss_gradients(set_edge_chunk(model, CHUNK), graph)
    assert len(plain) == len(chunked) > 0
    for a, b in zip(chunked, plain):
        _close(a, b)


@pytest.mark.parametrize("name", CHUNKED)
def test_scripted_chunked_model_takes_the_plain_path(name):
    model = set_edge_chunk(small_model(name), CHUNK)
    graph = _graph(model)
    eager = model(graph, compute_stress=True)
    scripted = torch.jit.script(model)(graph, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        _close(scripted[key], eager[key])


def test_negative_chunk_is_refused():
    with pytest.raises(ValueError, match="edge_chunk must be >= 0"):
        set_edge_chunk(small_model("schnet"), -1)


@pytest.mark.parametrize("name", ["painn", "mace"])
def test_unsorted_edges_and_an_isolated_atom(name):
    """Edges in any order (LAMMPS, hand-made graphs) and an atom without neighbours."""
    from ase import Atoms

    model = small_model(name)
    atoms = rattled_triclinic()
    atoms = Atoms(atoms.get_chemical_symbols() + ["Cu"],
                  positions=list(atoms.positions) + [[30.0, 30.0, 30.0]], pbc=False)
    graph = atoms_to_graph(atoms, model, dtype=torch.float64)
    assert int((graph["edge_index"][0] == len(atoms) - 1).sum()) == 0  # isolated
    order = torch.randperm(graph["edge_index"].shape[1], generator=torch.Generator().manual_seed(0))
    graph["edge_index"], graph["shifts"] = graph["edge_index"][:, order], graph["shifts"][order]
    plain = set_edge_chunk(model, 0)(graph)
    chunked = set_edge_chunk(model, CHUNK)(graph)
    for key in ("energy", "energies", "forces"):
        _close(chunked[key], plain[key])


def test_calculator_knob_sets_every_layer():
    from geoff.calculators import GeoffCalculator

    model = small_model("nequip")
    atoms = rattled_triclinic()
    plain = GeoffCalculator(model, dtype="float64", edge_chunk=0)
    chunked = GeoffCalculator(model, dtype="float64", edge_chunk=CHUNK)
    assert {m.edge_chunk for m in chunked.model.modules() if isinstance(m, EdgeMessages)} == {CHUNK}
    assert {m.edge_chunk for m in plain.model.modules() if isinstance(m, EdgeMessages)} == {0}
    plain_forces = plain.get_forces(atoms)
    torch.testing.assert_close(torch.as_tensor(chunked.get_forces(atoms)),
                               torch.as_tensor(plain_forces), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.as_tensor(chunked.get_stress(atoms)),
                               torch.as_tensor(plain.get_stress(atoms)), rtol=1e-10, atol=1e-12)

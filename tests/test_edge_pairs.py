"""Edge pairs (``geoff.graph.add_edge_pairs``): distance-only terms once per pair of reverse edges.

The pairing must be exact (an edge and its reverse, shifts negated; an edge without its
reverse alone), and a model must give the same energies, forces, stress and training
gradients with pairs as without, on the plain and the chunked path, eager and TorchScript,
batched or not. The calculator builds its graphs with pairs.
"""
import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import cluster, rattled_triclinic, small_model
from geoff.calculators.ase import GeoffCalculator
from geoff.graph import add_edge_pairs, atoms_to_graph, batch_graphs, edge_pairs
from geoff.potentials.chunking import set_edge_chunk

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRED = ["schnet", "painn", "nequip", "mace"]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _structures():
    """Triclinic periodic, a cell smaller than the cutoff (self-images), mixed pbc, a cluster."""
    small = Atoms("Cu", positions=[[0.1, 0.2, 0.3]], cell=[[2.6, 0, 0], [0.4, 2.5, 0],
                                                        [0.3, 0.2, 2.7]], pbc=True)
    slab = rattled_triclinic(seed=3)
    slab.pbc = [True, False, True]
    return {"triclinic": rattled_triclinic(), "self_images": small, "slab": slab,
            "cluster": cluster()}


@pytest.mark.parametrize("kind", ["triclinic", "self_images", "slab", "cluster"])
def test_pairs_are_exact_reverses(kind):
    graph = atoms_to_graph(_structures()[kind], species=["Cu", "Zr"], cutoff=4.0,
                           edge_pairs=True)
    i, j = graph["edge_index"]
    shifts, pair, first = graph["shifts"], graph["edge_pair"], graph["pair_first"]
    counts = torch.bincount(pair, minlength=first.shape[0])
    # a full neighbour list holds every pair twice: exactly half as many pairs as edges
    assert bool((counts == 2).all()) and 2 * first.shape[0] == i.shape[0]
    assert bool((pair[first] == torch.arange(first.shape[0])).all())
    other = torch.full_like(first, -1)
    for e in range(i.shape[0]):  # the edge of each pair that is not its first
        if e != int(first[pair[e]]):
            other[pair[e]] = e
    a, b = first, other
    assert bool((i[a] == j[b]).all()) and bool((j[a] == i[b]).all())
    torch.testing.assert_close(shifts[a], -shifts[b], rtol=0, atol=1e-12)


def test_an_edge_without_its_reverse_is_a_pair_of_its_own():
    graph = atoms_to_graph(rattled_triclinic(), species=["Cu", "Zr"], cutoff=4.0)
    keep = graph["edge_index"][0] != 0  # drop the edges into atom 0: their reverses stay
    pair, first = edge_pairs(graph["edge_index"][:, keep], graph["shifts"][keep])
    counts = torch.bincount(pair)
    lonely = int((counts == 1).sum())
    assert lonely == int((graph["edge_index"][0] == 0).sum())  # the edges out of atom 0
    assert int((counts == 2).sum()) * 2 + lonely == int(keep.sum())


@pytest.mark.parametrize("name", PAIRED)
def test_pairs_give_the_same_energy_forces_stress(name):
    model = small_model(name)
    atoms = rattled_triclinic()
    plain = atoms_to_graph(atoms, model, dtype=torch.float64)
    paired = add_edge_pairs(plain)
    assert paired["pair_first"].shape[0] * 2 == paired["edge_index"].shape[1]
    for chunk in (0, 37):  # the plain path and many uneven chunks
        set_edge_chunk(model, chunk)
        ref = model(plain, compute_stress=True)
        out = model(paired, compute_stress=True)
        for key in ("energy", "energies", "forces", "stress"):
            _close(out[key], ref[key])
    assert ref["forces"].abs().max() > 1e-6
    scripted = torch.jit.script(set_edge_chunk(model, 0))
    _close(scripted(paired, compute_stress=True)["forces"], ref["forces"])


@pytest.mark.parametrize("name", ["schnet", "mace"])
def test_pairs_give_the_same_training_gradients(name):
    model = small_model(name)
    graph = atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64)

    def gradients(g):
        model.train()
        model.zero_grad()
        out = model(g)
        (out["energy"].pow(2).sum() + out["forces"].pow(2).sum()).backward()
        model.eval()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(gradients(add_edge_pairs(graph)), gradients(graph)):
        _close(a, b)


def test_batched_pairs_match_each_graph():
    model = small_model("painn")
    graphs = [atoms_to_graph(a, model, dtype=torch.float64, edge_pairs=True)
              for a in (rattled_triclinic(seed=1), cluster(seed=2), rattled_triclinic(seed=4))]
    batch = batch_graphs(graphs)
    assert batch["pair_first"].shape[0] == sum(g["pair_first"].shape[0] for g in graphs)
    out = model(batch)
    alone = torch.cat([model(g)["energy"] for g in graphs])
    _close(out["energy"], alone)
    with pytest.raises(ValueError, match="edge_pairs=True"):
        batch_graphs([graphs[0], atoms_to_graph(cluster(), model, dtype=torch.float64)])


def test_calculator_uses_pairs_and_matches_the_graph_path():
    model = small_model("nequip")
    calc = GeoffCalculator(model, dtype="float64")
    atoms = rattled_triclinic()
    graph = calc.graph(atoms)
    assert "edge_pair" in graph and "pair_first" in graph
    atoms.calc = calc
    ref = model(atoms_to_graph(atoms, model, dtype=torch.float64), compute_stress=True)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"].detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energy(), float(ref["energy"].detach().sum()),
                               rtol=1e-12)


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_an_edge_mask_takes_the_per_edge_path(name):
    """A mask may weight the two edges of a pair differently: pairs are dropped for it."""
    model = small_model(name)
    graph = atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64)
    mask = torch.rand(graph["edge_index"].shape[1], generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    ref = model({**graph, "edge_mask": mask})
    out = model({**add_edge_pairs(graph), "edge_mask": mask})
    _close(out["energies"], ref["energies"])
    _close(out["forces"], ref["forces"])
    assert (ref["energies"] - model(graph)["energies"]).abs().max() > 1e-6  # the mask matters


def test_calculator_edge_pairs_knob():
    model = small_model("schnet")
    atoms = rattled_triclinic()
    assert "edge_pair" not in GeoffCalculator(model, edge_pairs=False).graph(atoms)
    assert "edge_pair" in GeoffCalculator(model, edge_pairs=True).graph(atoms)
    with pytest.raises(ValueError, match="edge_pairs must be"):
        GeoffCalculator(model, edge_pairs="yes")


def test_auto_edge_pairs_where_measured():
    """``"auto"``: any model with message layers on the CPU; on CUDA only the cuEq kernels
    (the e3nn path on a GPU was not measured with pairs)."""
    from geoff.inference import use_edge_pairs

    def auto_edge_pairs(model, device):
        return use_edge_pairs(model, "auto", device)

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert auto_edge_pairs(small_model("mace"), cpu)
    assert not auto_edge_pairs(small_model("dimenet"), cpu)  # no EdgeMessages layers
    assert not auto_edge_pairs(small_model("mace"), cuda)
    fused = type("CueqConvolution", (torch.nn.Module,), {})()
    holder = torch.nn.Sequential(fused)
    assert auto_edge_pairs(holder, cuda) and not auto_edge_pairs(torch.nn.Linear(1, 1), cuda)
    assert use_edge_pairs(small_model("mace"), True, cuda)  # asked for: as asked
    assert not use_edge_pairs(small_model("mace"), False, cpu)

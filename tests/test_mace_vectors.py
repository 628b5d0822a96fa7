"""MACE-style: the last layer skips its l > 0 channels when no head reads them.

``EnergyModel`` calls ``representation.skip_vectors()`` for heads without a vector channel
head; the last symmetric contraction then runs only its paths into 0e. The energy, forces
and stress must not move (float64), and a direct head must still get its vectors.
"""
import pytest
import torch
from conftest import rattled_triclinic, small_model

from geoff.graph import atoms_to_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def test_skipping_vectors_moves_no_number():
    model = small_model("mace")
    rep = model.representation
    assert rep.layers[-1].product.scalars_only and rep.n_vectors == 0
    assert not rep.layers[0].product.scalars_only  # the first layer feeds vectors on
    graph = atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64)
    skipped = model(graph, compute_stress=True)
    rep.skip_vectors(False)
    assert rep.n_vectors == rep.n_features and not rep.layers[-1].product.scalars_only
    full = model(graph, compute_stress=True)
    for key in ("energy", "energies", "forces", "stress"):
        torch.testing.assert_close(skipped[key], full[key], rtol=1e-12, atol=1e-13)
    features = rep(graph, graph["positions"][graph["edge_index"][1]]
                   - graph["positions"][graph["edge_index"][0]])
    assert features["vectors"].shape[1:] == (3, rep.n_features)


@pytest.mark.parametrize("head", ["direct", "both"])
def test_direct_heads_keep_the_vectors(head):
    model = small_model("mace", force_head=head)
    rep = model.representation
    assert not rep.layers[-1].product.scalars_only and rep.n_vectors == rep.n_features
    out = model(atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64))
    assert torch.isfinite(out["direct_forces" if "direct_forces" in out else "forces"]).all()


def test_skipped_model_scripts_and_agrees():
    model = small_model("mace")
    graph = atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64)
    scripted = torch.jit.script(model)
    ref, out = model(graph), scripted(graph)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=1e-12, atol=1e-13)

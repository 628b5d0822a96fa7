"""The edge explainer: recovery of a known edge set, fidelity, files, and the CLI."""
import json

import numpy as np
import pytest
import torch

from conftest import rattled_triclinic, small_model
from geoff.explain import explain_atom, global_importance, receptive_edges
from geoff.graph import atoms_to_graph
from geoff.potentials.energy_model import EnergyModel
from geoff.potentials.layers import PolynomialCutoff
from geoff.potentials.representation import LayeredRepresentation

pytestmark = pytest.mark.usefixtures("one_thread")


class KnownEdges(LayeredRepresentation):
    """h_i = sum over edges into i of known_e * u(r_e) * (1 + r_e): the per-atom output
    depends on exactly the edges with ``graph["known"] == 1`` (two declared layers, so the
    receptive field also holds edges into the neighbours, all irrelevant)."""

    EDGE_GATE = "gate"

    def __init__(self, cutoff: float):
        super().__init__(n_scalars=1, n_vectors=0, n_layers=2, node_features=["h"])
        self.envelope = PolynomialCutoff(cutoff)

    def embed(self, graph, edge_vec):
        r = torch.linalg.norm(edge_vec, dim=-1)
        geometry = {"edge_index": graph["edge_index"], "r": r,
                    "gate": self.envelope(r) * graph["known"]}
        return {"h": torch.zeros(graph["positions"].shape[0], 1, dtype=r.dtype)}, geometry

    def layer(self, k, state, geometry):
        if k > 0:
            return state
        i = geometry["edge_index"][0]
        m = (geometry["gate"] * (1 + geometry["r"])).unsqueeze(-1)
        return {"h": torch.zeros_like(state["h"]).index_add_(0, i, m)}

    def readout(self, state, geometry):
        return {"scalars": state["h"]}


def synthetic_model(cutoff=4.0):
    model = EnergyModel(KnownEdges(cutoff), ["Cu", "Zr"], cutoff, properties=["synthetic"])
    with torch.no_grad():  # head = silu(h): monotonic in h
        for layer in model.property_heads["synthetic"].mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.fill_(1.0)
                layer.bias.zero_()
    return model.double().eval()


def edge_keys(graph):
    """(receiver, sender, periodic shift) of each edge: unique, unlike (receiver, sender)."""
    shifts = np.round(graph["shifts"].detach().numpy(), 6)
    return [(int(i), int(j), tuple(s)) for (i, j), s in
            zip(graph["edge_index"].T.tolist(), shifts.tolist())]


class WithKnown(torch.nn.Module):
    """Adds the ``known`` edge flags to every graph (the explainer builds the graph itself)."""

    def __init__(self, model, known_pairs):
        super().__init__()
        self.model, self.known_pairs = model, known_pairs
        self.properties, self.n_layers, self.species = model.properties, 2, model.species
        self.cutoff = model.cutoff

    def forward(self, graph, compute_forces=False):
        known = torch.tensor([float(k in self.known_pairs) for k in edge_keys(graph)],
                             dtype=torch.float64)
        return self.model(dict(graph, known=known), compute_forces=compute_forces)


def test_explainer_recovers_a_known_edge_set():
    atoms = rattled_triclinic(seed=3, n=(2, 2, 2))
    model = synthetic_model()
    g = atoms_to_graph(atoms, model)
    atom = 5
    into = [k for k in edge_keys(g) if k[0] == atom]
    rng = np.random.default_rng(0)
    known = {into[k] for k in rng.choice(len(into), len(into) // 2, replace=False)}
    wrapped = WithKnown(model, known)
    ex = explain_atom(wrapped, atoms, atom, steps=300, top_k=len(known))
    field = int(receptive_edges(g["edge_index"], atom, 2).sum())
    assert ex.fidelity["field_edges"] == field > 3 * len(into)  # neighbours' edges are in it
    top = {(e["receiver"], e["sender"], tuple(np.round(e["shift"], 6))) for e in ex.top()}
    precision = len(top & known) / len(known)
    assert precision >= 0.9, (precision, ex.top())
    assert ex.fidelity["kept"] < 0.05 * abs(ex.prediction)  # the known edges suffice
    assert ex.fidelity["removed"] > 0.5 * abs(ex.prediction)  # and are needed


def test_explanation_files_and_global_table(tmp_path):
    from geoff.explain_plots import plot_global, plot_neighbourhood

    model = small_model("schnet", properties=["barrier_mean"])
    atoms = rattled_triclinic(seed=1)
    exs = [explain_atom(model, atoms, a, steps=20) for a in (0, 1)]
    ex = exs[0]
    assert ex.output == "barrier_mean" and len(ex.top()) == ex.top_k == 10
    importances = [e["importance"] for e in ex.edges]
    assert importances == sorted(importances, reverse=True)
    assert all(0.0 <= w <= 1.0 for w in importances)
    ex.to_json(tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text())["atom"] == 0
    plot_neighbourhood(atoms, ex, tmp_path / "a.png")
    table = global_importance(exs)
    assert set(table) <= {"Cu-Cu", "Cu-Zr", "Zr-Zr"} and table
    plot_global(table, tmp_path / "g.png")
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "g.png").exists()


def test_cli_explains_an_atom(tmp_path, capsys):
    import ase.io

    import geoff
    from geoff.cli import main

    model = small_model("painn", properties=["barrier_mean"])
    geoff.save(model, tmp_path / "m.ckpt")
    ase.io.write(tmp_path / "s.extxyz", rattled_triclinic(seed=2))
    rc = main(["explain", str(tmp_path / "m.ckpt"), str(tmp_path / "s.extxyz"), "--atom", "3",
               "--steps", "10", "-o", str(tmp_path / "out" / "atom3")])
    assert rc == 0
    data = json.loads((tmp_path / "out" / "atom3.json").read_text())
    assert data["atom"] == 3 and data["fidelity"]["field_edges"] > 0
    assert (tmp_path / "out" / "atom3.png").exists()
    assert "fidelity" in capsys.readouterr().out


def test_a_model_that_ignores_edge_masks_is_refused():
    """GemNet (forward only, edge state) has no EDGE_GATE: explaining it would be silent noise."""
    from ase.build import bulk
    from conftest import small_model
    from geoff.explain import explain_atom

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(ValueError, match="does not apply graph\\['edge_mask'\\]"):
        explain_atom(small_model("gemnet"), atoms, 0, steps=1)

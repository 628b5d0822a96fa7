"""The representation contract (geoff/potentials/representation.py): every model of the zoo is
an embedding, one function per layer and a readout; autograd runs through each piece on its
own, as a LAMMPS pair style with per-layer communication will run them (float64)."""
import inspect
from typing import Dict

import pytest
import torch
from torch import Tensor, nn

from conftest import rattled_triclinic, small_model
from geoff.export import export, load_exported
from geoff.graph import atoms_to_graph
from geoff.potentials import (SHARED_HPARAMS, EnergyModel, LayeredRepresentation,
                              Representation, available_models, build_model)
from geoff.potentials.layers import scatter_sum
from geoff.potentials.registry import representation_class

# Models whose state lives on directed edges with blocks spanning two hops: forward only
# (``decomposable`` False); LAMMPS runs them in the ghost-shell mode.
FORWARD_ONLY = {"gemnet"}
# Every other registered model, and the non-local FAENet variant.
VARIANTS = [(name, {}) for name in available_models() if name not in FORWARD_ONLY] \
    + [("faenet", {"frames": "global"})]
IDS = [name + "".join(f"-{v}" for v in hp.values()) for name, hp in VARIANTS]


def inputs(model):
    """The graph and the edge vectors (E, 3) that EnergyModel hands its representation."""
    graph = atoms_to_graph(rattled_triclinic(), model)
    pos, edge_index = graph["positions"], graph["edge_index"]
    return graph, pos[edge_index[1]] - pos[edge_index[0]] + graph["shifts"]


def leaves(tensors: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Detached copies of the floating-point tensors that require grad (integers as they are)."""
    return {k: v.detach().requires_grad_(True) if v.is_floating_point() else v
            for k, v in tensors.items()}


def loss_weights(features: Dict[str, Tensor]) -> Dict[str, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=generator, dtype=v.dtype)
            for k, v in features.items()}


def differentiable(tensors: Dict[str, Tensor]):
    return [k for k, v in tensors.items() if v.requires_grad]


@pytest.mark.parametrize("name,hparams", VARIANTS, ids=IDS)
def test_pieces_compose_to_forward(name, hparams):
    model = small_model(name, **hparams)
    rep = model.representation
    assert isinstance(rep, LayeredRepresentation) and rep.decomposable
    graph, edge_vec = inputs(model)
    state, geometry = rep.embed(graph, edge_vec)
    for k in range(rep.n_layers):
        state = rep.layer(k, state, geometry)
        # The declared exchanged entries are in the state, one row per atom / per edge.
        assert all(state[key].shape[0] == graph["positions"].shape[0] for key in rep.node_features)
        assert all(state[key].shape[0] == edge_vec.shape[0] for key in rep.edge_messages)
    by_hand = rep.readout(state, geometry)
    whole = rep(graph, edge_vec)
    assert set(by_hand) == set(whole) == ({"scalars", "vectors"} if rep.n_vectors else {"scalars"})
    for key in whole:
        assert torch.equal(by_hand[key], whole[key]), key
    assert whole["scalars"].shape[1] == rep.n_scalars
    if rep.n_vectors:
        assert whole["vectors"].shape[1:] == (3, rep.n_vectors)
    with pytest.raises(IndexError):
        rep.layer(rep.n_layers, state, geometry)


@pytest.mark.parametrize("name,hparams", VARIANTS, ids=IDS)
def test_backward_piece_by_piece_equals_whole(name, hparams):
    """Each piece run as its own autograd graph (inputs detached, as after a ghost exchange),
    the gradients handed back piece by piece from the readout to the embedding: the gradient
    with respect to the edge vectors equals one backward pass through forward, and every
    exchanged state entry receives a non-zero gradient from the layer that reads it."""
    model = small_model(name, **hparams)
    rep = model.representation
    graph, edge_vec = inputs(model)
    x = edge_vec.detach().requires_grad_(True)

    state0, geometry_out = rep.embed(graph, x)
    geometry = leaves(geometry_out)
    states_in, states_out = [], []
    state = state0
    for k in range(rep.n_layers):
        states_in.append(leaves(state))
        state = rep.layer(k, states_in[-1], geometry)
        states_out.append(state)
    final = leaves(state)
    features = rep.readout(final, geometry)
    weights = loss_weights(features)
    loss = sum((features[k] * weights[k]).sum() for k in features)

    # Readout, then the layers in reverse, each backward on its own graph.
    names = differentiable(final) + differentiable(geometry)
    grads = torch.autograd.grad(loss, [final[k] if k in final else geometry[k] for k in names],
                                allow_unused=True)
    grad_state = {k: g for k, g in zip(names, grads) if k in final and g is not None}
    grad_geometry = {k: g for k, g in zip(names, grads) if k not in final and g is not None}
    for k in reversed(range(rep.n_layers)):
        outs = [key for key in differentiable(states_out[k]) if key in grad_state]
        wrt_state = differentiable(states_in[k])
        wrt = [states_in[k][key] for key in wrt_state] + [geometry[key]
                                                            for key in differentiable(geometry)]
        grads = torch.autograd.grad([states_out[k][key] for key in outs], wrt,
                                    grad_outputs=[grad_state[key] for key in outs],
                                    allow_unused=True)
        grad_state = {key: g for key, g in zip(wrt_state, grads) if g is not None}
        for key in rep.node_features + rep.edge_messages:
            if key in states_in[k]:
                g = grad_state.get(key)
                assert g is not None and g.abs().max() > 0, f"layer {k}: no gradient for {key}"
        for key, g in zip(differentiable(geometry), grads[len(wrt_state):]):
            if g is not None:
                grad_geometry[key] = grad_geometry.get(key, 0) + g
    # Through the embedding: state0 and geometry back to the edge vectors.
    outs0 = [k for k in differentiable(state0) if k in grad_state]
    outs1 = [k for k in differentiable(geometry_out) if k in grad_geometry]
    (pieces,) = torch.autograd.grad([state0[k] for k in outs0] + [geometry_out[k] for k in outs1],
                                    [x], grad_outputs=[grad_state[k] for k in outs0]
                                    + [grad_geometry[k] for k in outs1])

    y = edge_vec.detach().requires_grad_(True)
    whole = rep(graph, y)
    (reference,) = torch.autograd.grad(sum((whole[k] * weights[k]).sum() for k in whole), [y])
    assert reference.abs().max() > 0
    torch.testing.assert_close(pieces, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(available_models()) - FORWARD_ONLY))
def test_exported_model_carries_the_pieces(name, tmp_path):
    """The export (torch.jit.script of the EnergyModel) compiles embed, layer and readout with
    forward: a TorchScript consumer of the file can call them one by one."""
    model = small_model(name)
    scripted, _ = load_exported(export(model, tmp_path / "m.pt"))
    scripted = scripted.representation
    graph, edge_vec = inputs(model)
    state, geometry = scripted.embed(graph, edge_vec)
    for k in range(model.n_layers):
        state = scripted.layer(k, state, geometry)
    by_hand = scripted.readout(state, geometry)
    whole = model.representation(graph, edge_vec)
    for key in whole:
        torch.testing.assert_close(by_hand[key], whole[key], rtol=1e-12, atol=1e-14)


def test_locality_is_declared():
    assert all(small_model(name).is_local for name in available_models())
    for frames, local in [("local", True), ("global", False), ("stochastic", False)]:
        model = small_model("faenet", frames=frames)
        assert model.representation.is_local is local and model.is_local is local


class PairSum(Representation):
    """A representation with forward only (non-decomposable): h_i = sum_j exp(-r_ij)."""

    def __init__(self):
        super().__init__(n_scalars=1, n_vectors=0, n_layers=1)

    def forward(self, graph: Dict[str, Tensor], edge_vec: Tensor) -> Dict[str, Tensor]:
        pair = torch.exp(-torch.linalg.norm(edge_vec, dim=-1))  # (E,)
        n = graph["positions"].shape[0]
        return {"scalars": scatter_sum(pair, graph["edge_index"][0], n).unsqueeze(-1)}  # (N, 1)


def test_forward_only_representation_works():
    rep = PairSum()
    assert not rep.decomposable and rep.is_local
    model = EnergyModel(rep, ["Cu", "Zr"], 4.0).double().eval()
    graph, _ = inputs(model)
    out = torch.jit.script(model)(graph, True, True)
    assert torch.isfinite(out["forces"]).all() and out["energy"].shape == (1,)


def test_plain_module_is_taken_as_local():
    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_scalars, self.n_layers = 4, 2

    model = EnergyModel(Bare(), ["Cu"], 3.0)
    assert model.is_local and model.n_layers == 2 and model.vector_channel_head is None
    with pytest.raises(ValueError, match="no 'n_scalars' attribute"):
        EnergyModel(nn.Linear(2, 2), ["Cu"], 3.0)


def test_energy_model_has_a_docstring():
    assert EnergyModel.__doc__ and "Energy, forces, stress" in EnergyModel.__doc__


# Which shared hyper-parameter names each model takes (cutoff and force_head: every model,
# through build_model). A name a model does not take either does not concern it or is listed
# with the reason in its inapplicable_hparams.
TAKES = {
    "schnet": {"n_layers", "n_features", "n_rbf"},
    "dimenet": {"n_layers", "n_features", "n_rbf", "l_max"},
    "painn": {"n_layers", "n_features", "n_rbf"},
    "egnn": {"n_layers", "n_features", "n_rbf"},
    "nequip": {"n_layers", "n_features", "n_rbf", "l_max"},
    "mace": {"n_layers", "n_features", "n_rbf", "l_max", "correlation"},
    "faenet": {"n_layers", "n_features", "n_rbf", "frames", "n_samples"},
    "symgnn": {"n_layers", "n_features", "n_rbf", "n_samples"},
    "gemnet": {"n_layers", "n_features", "n_rbf", "l_max"},
}


@pytest.mark.parametrize("name", available_models())
def test_shared_hyperparameter_names(name):
    cls = representation_class(name)
    taken = set(inspect.signature(cls).parameters) & set(SHARED_HPARAMS)
    assert taken == TAKES[name] | {"cutoff"}
    model = build_model(name, ["Cu"], cutoff=3.0, n_layers=2, n_features=8, n_rbf=4)
    # n_layers attribute = receptive hops: DimeNet++'s embedding adds one, GemNet's blocks two
    assert model.n_layers == {"dimenet": 3, "gemnet": 5}.get(name, 2)
    for key in set(SHARED_HPARAMS) - TAKES[name] - {"cutoff", "force_head"}:
        with pytest.raises(ValueError, match=f"bad hyper-parameters for '{name}'.*{key}"):
            build_model(name, ["Cu"], **{key: 2})


def test_inapplicable_names_give_the_reason():
    with pytest.raises(ValueError, match="'correlation' does not apply: NequIP messages are "
                                         "two-body.*use 'mace'"):
        build_model("nequip", ["Cu"], correlation=3)
    with pytest.raises(ValueError, match="'frames' does not apply: symgnn averages"):
        build_model("symgnn", ["Cu"], frames="sampled")


def test_every_model_declares_the_contract():
    """All registered models are Representations; only FORWARD_ONLY ones are not layered."""
    for name in available_models():
        cls = representation_class(name)
        assert issubclass(cls, Representation), name
        assert cls.decomposable == (name not in FORWARD_ONLY), name

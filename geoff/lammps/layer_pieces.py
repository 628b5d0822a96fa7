"""The per-layer pieces that `pair_style geoff` calls between MPI communications.

Under domain decomposition with per-layer communication (``pair_style geoff graph layers``,
the default on several ranks), each rank holds its own atoms plus one cutoff of ghosts and
runs the model in pieces, exchanging the ghost rows of the node features between them::

    state, geometry = lammps_embed(graph)                 # edge vectors, species embedding
    for k in range(n_layers):
        state = lammps_layer(k, state, geometry)          # one message-passing hop
        # C++: ghost rows of state[node_features] <- their owners (forward comm), k < L-1
    energies = lammps_energies(state, geometry, species, n_local)    # (n_local,) eV

and then the backward pass in the reverse order (gradients of ghost rows go back to their
owners, summed: reverse comm). ``layered_export`` turns an ``EnergyModel`` whose
representation is a ``LayeredRepresentation`` into a ``PerLayerEnergyModel``: the same module
(same attributes, same ``forward``) with these three methods compiled in, so one exported file
serves the periodic, ghost-shell and per-layer graphs.

``comm_metadata`` gives what the pair style must know before the first step (LAMMPS sizes its
communication buffers at ``init``): the node-feature names and, for each layer boundary, the
doubles per atom that are communicated.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..potentials.energy_model import EnergyModel
from ..potentials.layers import scatter_sum  # noqa: F401  (TorchScript resolves globals)


class PerLayerEnergyModel(EnergyModel):
    """``EnergyModel`` plus the pieces ``pair_style geoff graph layers`` calls (see module)."""

    @torch.jit.export
    def lammps_embed(self, graph: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor],
                                                                Dict[str, Tensor]]:
        """Graph (positions (N,3) Å, shifts (E,3) Å, edge_index, species) -> (state, geometry).

        Edge vectors r_ij = x_j - x_i + shift_ij are formed here, so that the gradient of the
        energy with respect to ``shifts`` is dE/dr_ij (the per-edge virial).
        """
        positions = graph["positions"]
        edge_index = graph["edge_index"]
        edge_vec = positions[edge_index[1]] - positions[edge_index[0]] + graph["shifts"]
        return self.representation.embed(graph, edge_vec)

    @torch.jit.export
    def lammps_layer(self, k: int, state: Dict[str, Tensor],
                     geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Message-passing layer ``k`` (0 <= k < n_layers)."""
        return self.representation.layer(k, state, geometry)

    @torch.jit.export
    def lammps_energies(self, state: Dict[str, Tensor], geometry: Dict[str, Tensor],
                        species: Tensor, n_local: int) -> Tensor:
        """Per-atom energies (eV) of the first ``n_local`` atoms (the rank's own), (n_local,)."""
        h = self.representation.readout(state, geometry)["scalars"][:n_local]  # (n_local, F)
        z = species[:n_local]
        return self.energy_head(h).squeeze(-1) * self.scale[z] + self.atomic_energies[z]


def per_layer_refusal(model) -> Optional[str]:
    """Why ``model`` cannot run with per-layer communication (None if it can).

    The pair style then falls back to the ghost-shell graph and prints this reason.
    """
    rep = getattr(model, "representation", None)
    if not isinstance(model, EnergyModel) or not getattr(rep, "decomposable", False):
        return "its representation is not split into embed/layer/readout pieces"
    if not model.is_local:
        return "it is not local (global frames)"
    if rep.edge_messages:
        return f"its layers pass per-edge messages ({', '.join(rep.edge_messages)})"
    if not rep.node_features:
        return "it declares no node features"
    if not model.conservative:
        return "its forces come from a direct force head (it reads its neighbours' " \
               "final features)"
    return None


def layered_export(model: EnergyModel) -> PerLayerEnergyModel:
    """A shallow copy of ``model`` (sharing its weights) with the per-layer pieces."""
    pieces = copy.copy(model)
    pieces.__class__ = PerLayerEnergyModel
    return pieces


def _probe_graph(model: EnergyModel) -> Dict[str, Tensor]:
    """Three atoms of the model's first species within the cutoff, all edges."""
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float64
    device = param.device if param is not None else torch.device("cpu")
    d = 0.5 * model.cutoff
    positions = torch.tensor([[0.0, 0.0, 0.0], [d, 0.0, 0.0], [0.0, d, 0.1 * d]],
                             dtype=dtype, device=device)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    edge_index = torch.tensor(pairs, dtype=torch.long, device=device).t().contiguous()
    return {"positions": positions, "species": torch.zeros(3, dtype=torch.long, device=device),
            "edge_index": edge_index,
            "shifts": torch.zeros((edge_index.shape[1], 3), dtype=dtype, device=device),
            "cell": torch.zeros((1, 3, 3), dtype=dtype, device=device),
            "pbc": torch.zeros((1, 3), dtype=torch.bool, device=device),
            "batch": torch.zeros(3, dtype=torch.long, device=device),
            "n_local": torch.tensor([3], device=device)}


def comm_metadata(model: EnergyModel) -> Dict[str, Any]:
    """``{"node_features": [...], "widths": [w_1, ..., w_{L-1}], "edge_state": [...]}``:
    doubles per atom sent after layer k (k = 0 .. n_layers - 2), measured on a three-atom
    probe graph, and the state entries with one row per edge instead of one per atom.

    Node features may change width from layer to layer (e.g. scalars only after the
    embedding, then vectors); the pair style sizes LAMMPS' buffers for the widest.
    ``edge_state`` non-empty (FAENet's per-edge messages) rules out ``pair_style geoff ...
    chunk``, which splits every state entry by atom rows (a file without the key: no
    chunking either, it predates the check).
    """
    rep = model.representation
    names: List[str] = list(rep.node_features)
    widths: List[int] = []
    graph = _probe_graph(model)
    n_atoms = graph["positions"].shape[0]
    edge_state: List[str] = []
    with torch.no_grad():
        state, geometry = layered_export(model).lammps_embed(graph)
        for k in range(rep.n_layers):
            state = rep.layer(k, state, geometry)
            if k + 1 < rep.n_layers:
                widths.append(sum(math.prod(state[n].shape[1:]) for n in names))
            edge_state += [key for key, value in state.items()
                           if value.dim() == 0 or value.shape[0] != n_atoms]
    return {"node_features": names, "widths": widths,
            "edge_state": sorted(set(edge_state))}

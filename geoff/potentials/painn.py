"""PaiNN (Schütt, Unke & Gastegger, 2021): equivariant message passing with scalar and vector
features.

Every atom carries scalars s (N, F) and vectors v (N, 3, F). A message block mixes in the
neighbours' scalars and vectors through radial filters and the unit edge vectors; an update
block couples each atom's scalars and vectors through the norms and scalar products of two
linear mixes of its vector channels. Vectors only ever get multiplied by invariants, summed and
linearly mixed over channels, so they rotate (and reflect) with the structure and scalars stay
invariant.

Departures from the paper:
* The polynomial cutoff envelope of ``layers.PolynomialCutoff`` (smooth to higher order, so
  MD sees no force kinks) multiplies the filters instead of the cosine cutoff.
* Vector norms are ``sqrt(|v|^2 + eps)``: the initial vectors are zero, where the plain norm
  has no derivative (NaN forces).
* The representation returns the final features; the energy read-out (and the direct force
  head, a linear combination of the F vector channels) live in ``EnergyModel``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .chunking import EdgeMessages
from .layers import BesselBasis, PolynomialCutoff, mlp
from .representation import LayeredRepresentation, edge_pair, pair_rows, with_pairs


class PaiNNMessage(EdgeMessages):
    """Neighbours' scalars and vectors -> residual updates of the receiver's s and v.

    The filters (``radial_terms``, once per pair of reverse edges when the graph has them)
    and the messages are per-edge (chunked by ``EdgeMessages``).
    """

    def __init__(self, n_features: int, n_rbf: int, act: str):
        super().__init__()
        self.n_features = n_features
        self.phi = mlp([n_features, n_features, 3 * n_features], act=act)
        self.filter = nn.Linear(n_rbf, 3 * n_features)

    def radial_terms(self, inputs: List[Tensor]) -> List[Tensor]:
        # The envelope on every message makes energies and forces vanish smoothly at the cutoff.
        rbf, envelope = inputs[0], inputs[1]  # (rows, n_rbf), (rows,)
        return [self.filter(rbf) * envelope.unsqueeze(-1)]  # (rows, 3F)

    def messages(self, nodes: List[Tensor], edges: List[Tensor], senders: Tensor) -> List[Tensor]:
        """``nodes`` [phi(s) (N, 3F), v (N, 3, F)], or [phi(s)] alone where v is zero."""
        phi_s = nodes[0]  # (N, 3F)
        w, unit = edges[0], edges[1]  # (E, 3F), (E, 3)
        x = phi_s.index_select(0, senders) * w  # (E, 3F)
        ds, dv_v, dv_r = torch.split(x, self.n_features, dim=-1)
        # Vector message: gated neighbour vectors plus a gated edge direction (both equivariant).
        dv = unit.unsqueeze(-1) * dv_r.unsqueeze(1)  # (E, 3, F)
        if len(nodes) > 1:
            dv = nodes[1].index_select(0, senders) * dv_v.unsqueeze(1) + dv  # (E, 3, F)
        return [ds, dv]

    def forward(self, s: Tensor, v: Tensor, edge_index: Tensor, rbf: Tensor, envelope: Tensor,
                unit: Tensor, v_is_zero: bool = False, edge_pair: Optional[Tensor] = None):
        """``v_is_zero``: v is the embedding's zeros (layer 0), so the (E, 3, F) neighbour-vector
        term of the messages is skipped: it is exactly zero, and so is its gradient.
        ``edge_pair``: ``rbf`` has one row per pair of reverse edges (``EdgeMessages``)."""
        nodes = [self.phi(s)] if v_is_zero else [self.phi(s), v]
        ds, dv = self.aggregate(nodes, [rbf, envelope], [unit], edge_index, s.shape[0],
                                edge_pair)
        return s + ds, v + dv  # (N, F), (N, 3, F)


class PaiNNUpdate(nn.Module):
    """Per-atom coupling of scalars and vectors through ||V v|| and <U v, V v>."""

    def __init__(self, n_features: int, act: str, eps: float):
        super().__init__()
        self.n_features = n_features
        self.eps = eps
        # No bias: a constant added to a vector channel would not rotate with the structure.
        self.U = nn.Linear(n_features, n_features, bias=False)
        self.V = nn.Linear(n_features, n_features, bias=False)
        self.mlp = mlp([2 * n_features, n_features, 3 * n_features], act=act)

    def forward(self, s: Tensor, v: Tensor):
        uv = self.U(v)  # (N, 3, F)
        vv = self.V(v)  # (N, 3, F)
        # eps keeps the derivative of the norm finite where vv = 0 (always so in layer one).
        norm = torch.sqrt(torch.sum(vv * vv, dim=1) + self.eps)  # (N, F)
        a = self.mlp(torch.cat([s, norm], dim=-1))  # (N, 3F)
        a_vv, a_sv, a_ss = torch.split(a, self.n_features, dim=-1)
        ds = a_sv * torch.sum(uv * vv, dim=1) + a_ss  # (N, F)
        dv = a_vv.unsqueeze(1) * uv  # (N, 3, F)
        return s + ds, v + dv  # (N, F), (N, 3, F)


class PaiNNLayer(nn.Module):
    """One message block followed by one update block."""

    def __init__(self, n_features: int, n_rbf: int, act: str, eps: float):
        super().__init__()
        self.message = PaiNNMessage(n_features, n_rbf, act)
        self.update = PaiNNUpdate(n_features, act, eps)

    def forward(self, s: Tensor, v: Tensor, edge_index: Tensor, rbf: Tensor, envelope: Tensor,
                unit: Tensor, v_is_zero: bool = False, edge_pair: Optional[Tensor] = None):
        s, v = self.message(s, v, edge_index, rbf, envelope, unit, v_is_zero, edge_pair)
        return self.update(s, v)  # (N, F), (N, 3, F)


class PaiNN(LayeredRepresentation):
    """Per-atom scalars (N, F) and vectors (N, 3, F) from species and edge vectors.

    Args:
        n_species: number of elements.
        cutoff: neighbour cutoff (Å).
        n_features: F, width of the scalar and of the vector channels.
        n_layers: message + update blocks (each one hop of the receptive field).
        n_rbf: sin(n pi r / c) / r radial functions.
        activation: a smooth activation name from ``layers.activation``.
        eps: added to squared vector norms (in squared feature units) before the square root.

    Pieces (``representation.py``): state ``{"s": (N, F), "v": (N, 3, F)}``, both exchanged
    between layers; geometry ``edge_index``, ``unit`` (E, 3), ``rbf``, ``envelope``. Layer 0
    takes ``v`` to be the zeros that ``embed`` returns (it skips the messages' v term). With
    edge pairs in the graph, ``rbf`` and ``envelope`` have one row per pair and ``edge_pair``
    (E,) joins them.
    """

    EDGE_GATE = "envelope"  # graph["edge_mask"] multiplies this (representation.py)

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 128,
                 n_layers: int = 3, n_rbf: int = 20, activation: str = "silu",
                 eps: float = 1e-8):
        super().__init__(n_scalars=n_features, n_vectors=n_features, n_layers=n_layers,
                         node_features=["s", "v"])
        self.n_features = n_features
        self.embedding = nn.Embedding(n_species, n_features)
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.envelope = PolynomialCutoff(cutoff)
        self.layers = nn.ModuleList(
            [PaiNNLayer(n_features, n_rbf, activation, eps) for _ in range(n_layers)]
        )

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        # Edges join distinct points (periodic self-images included), so r > 0 in any valid
        # graph; the clamp only guards the division against a duplicate atom.
        r = torch.linalg.norm(edge_vec, dim=-1).clamp(min=1e-12)  # (E,)
        r_rows = pair_rows(graph, r)  # (E or P,): the distance-only terms once per pair
        geometry = {"edge_index": graph["edge_index"],
                    "unit": edge_vec / r.unsqueeze(-1),  # (E, 3)
                    "rbf": self.rbf(r_rows),  # (E or P, n_rbf)
                    "envelope": self.envelope(r_rows)}  # (E or P,)
        s = self.embedding(graph["species"])  # (N, F)
        v = torch.zeros((s.shape[0], 3, self.n_features), dtype=s.dtype, device=s.device)
        return {"s": s, "v": v}, with_pairs(graph, geometry)  # (N, F), (N, 3, F)

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        self.check_layer(k)
        s, v = state["s"], state["v"]
        for index, block in enumerate(self.layers):
            if index == k:
                # Layer 0 reads the embedding's zero vectors (see the class docstring).
                s, v = block(s, v, geometry["edge_index"], geometry["rbf"],
                             geometry["envelope"], geometry["unit"], k == 0,
                             edge_pair(geometry))  # (N, F), (N, 3, F)
        return {"s": s, "v": v}

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return {"scalars": state["s"], "vectors": state["v"]}  # (N, F), (N, 3, F)

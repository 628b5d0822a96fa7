"""SchNet (Schütt et al., 2018): invariant continuous-filter convolutions on distances.

Departures from the paper: a polynomial cutoff envelope (smooth to the 6th derivative, so MD
sees no force jumps) instead of the cosine cutoff, and Gaussian bases on [0, cutoff].
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .chunking import EdgeMessages
from .layers import GaussianBasis, PolynomialCutoff, mlp
from .representation import LayeredRepresentation, edge_pair, pair_rows, with_pairs


class CFConv(EdgeMessages):
    """One interaction: h_i += mlp( sum_j W(r_ij) * lin(h_j) ), W a filter network on r.

    The filter (``radial_terms``, once per pair of reverse edges when the graph has them) and
    the messages are per-edge (chunked by ``EdgeMessages``).
    """

    def __init__(self, n_features: int, n_rbf: int, act: str):
        super().__init__()
        self.filter = mlp([n_rbf, n_features, n_features], act=act)
        self.in_lin = nn.Linear(n_features, n_features, bias=False)
        self.out = mlp([n_features, n_features, n_features], act=act)

    def radial_terms(self, inputs: List[Tensor]) -> List[Tensor]:
        rbf, envelope = inputs[0], inputs[1]  # (rows, n_rbf), (rows,)
        return [self.filter(rbf) * envelope.unsqueeze(-1)]  # (rows, F)

    def messages(self, nodes: List[Tensor], edges: List[Tensor], senders: Tensor) -> List[Tensor]:
        return [nodes[0].index_select(0, senders) * edges[0]]  # (E, F)

    def forward(self, h: Tensor, edge_index: Tensor, rbf: Tensor, envelope: Tensor,
                edge_pair: Optional[Tensor] = None) -> Tensor:
        summed = self.aggregate([self.in_lin(h)], [rbf, envelope], [], edge_index, h.shape[0],
                                edge_pair)
        return h + self.out(summed[0])  # (N, F)


class SchNet(LayeredRepresentation):
    """Per-atom invariant features (N, n_features) from species and interatomic distances.

    Pieces (``representation.py``): state ``{"h": (N, F)}``, exchanged between layers;
    geometry ``edge_index``, ``rbf`` (E, n_rbf) and ``envelope`` (E,): with edge pairs in the
    graph one row per pair (P, ...) and ``edge_pair`` (E,) to join them.
    """

    EDGE_GATE = "envelope"  # graph["edge_mask"] multiplies this (representation.py)

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 128,
                 n_layers: int = 3, n_rbf: int = 32, activation: str = "ssp"):
        super().__init__(n_scalars=n_features, n_vectors=0, n_layers=n_layers,
                         node_features=["h"])
        self.embedding = nn.Embedding(n_species, n_features)
        self.rbf = GaussianBasis(cutoff, n_rbf)
        self.envelope = PolynomialCutoff(cutoff)
        self.interactions = nn.ModuleList(
            [CFConv(n_features, n_rbf, activation) for _ in range(n_layers)]
        )

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        r = pair_rows(graph, torch.linalg.norm(edge_vec, dim=-1))  # (E or P,): once per pair
        geometry = {"edge_index": graph["edge_index"],
                    "rbf": self.rbf(r),  # (E or P, n_rbf)
                    "envelope": self.envelope(r)}  # (E or P,)
        h = self.embedding(graph["species"])  # (N, F)
        return {"h": h}, with_pairs(graph, geometry)

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        self.check_layer(k)
        h = state["h"]
        for index, interaction in enumerate(self.interactions):
            if index == k:
                h = interaction(h, geometry["edge_index"], geometry["rbf"],
                                geometry["envelope"], edge_pair(geometry))  # (N, F)
        return {"h": h}

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return {"scalars": state["h"]}  # (N, F)

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
from .radial_table import DEFAULT_POINTS, RadialTable, float64_copy
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
        self.table: Optional[RadialTable] = None  # filter x envelope of r (SchNet.tabulate)

    def radial_terms(self, inputs: List[Tensor]) -> List[Tensor]:
        table = self.table
        if table is not None and len(inputs) == 1:  # [r (rows,)]: read from the table
            return [table(inputs[0])]  # (rows, F)
        rbf, envelope = inputs[0], inputs[1]  # (rows, n_rbf), (rows,)
        return [self.filter(rbf) * envelope.unsqueeze(-1)]  # (rows, F)

    def messages(self, nodes: List[Tensor], edges: List[Tensor], senders: Tensor) -> List[Tensor]:
        return [nodes[0].index_select(0, senders) * edges[0]]  # (E, F)

    def forward(self, h: Tensor, edge_index: Tensor, radial: List[Tensor],
                edge_pair: Optional[Tensor] = None) -> Tensor:
        """``radial``: [rbf (rows, n_rbf), envelope (rows,)], or [r (rows,)] with a table."""
        summed = self.aggregate([self.in_lin(h)], radial, [], edge_index, h.shape[0],
                                edge_pair)
        return h + self.out(summed[0])  # (N, F)


class SchNet(LayeredRepresentation):
    """Per-atom invariant features (N, n_features) from species and interatomic distances.

    Pieces (``representation.py``): state ``{"h": (N, F)}``, exchanged between layers;
    geometry ``edge_index``, ``rbf`` (E, n_rbf) and ``envelope`` (E,): with edge pairs in the
    graph one row per pair (P, ...) and ``edge_pair`` (E,) to join them.
    """

    EDGE_GATE = "envelope"  # graph["edge_mask"] multiplies this (representation.py)
    RADIAL_TABLE_AUTO = ("cpu",)  # 0.81-0.84x the model time at 256-864 atoms, 2 cores
    # skin_edges="auto" keeps the Verlet list whole up to here on CUDA (cheap per edge: an MD
    # step 0.87-0.97x the filtered one at 1,372-2,916 atoms on one H200, 1.04x at 4,000)
    SKIN_KEEP_MAX_ATOMS = 3_000
    # cuda_graphs="auto" captures search + model up to here (small activations: ~0.4 MB per
    # atom in the pool). One H200, a new structure: whole call captured 7.5-7.6 ms at 4,000
    # atoms and 13.1-13.4 at 8,788 (cuda_graphs=True, fourteenth session), the search alone
    # 8.5-10.1 and 13.7-16.2 (fifteenth session); speed.md
    CAPTURE_MAX_ATOMS = 10_000

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 128,
                 n_layers: int = 3, n_rbf: int = 32, activation: str = "ssp"):
        super().__init__(n_scalars=n_features, n_vectors=0, n_layers=n_layers,
                         node_features=["h"])
        self.embedding = nn.Embedding(n_species, n_features)
        self.cutoff = float(cutoff)
        self.rbf = GaussianBasis(cutoff, n_rbf)
        self.envelope = PolynomialCutoff(cutoff)
        self.interactions = nn.ModuleList(
            [CFConv(n_features, n_rbf, activation) for _ in range(n_layers)]
        )

    def tabulate(self, n_points: int = DEFAULT_POINTS) -> None:
        """Read each layer's filter x envelope from a ``RadialTable`` (inference): sampled
        now in float64 on [0, cutoff], stored in the model's dtype and device. Training mode
        and edge masks keep the networks; ``untabulate`` drops the tables."""
        ref = next(self.parameters())
        rbf, envelope = float64_copy(self.rbf), float64_copy(self.envelope)
        for interaction in self.interactions:
            filter64 = float64_copy(interaction.filter)
            interaction.table = RadialTable(
                lambda r, f=filter64: f(rbf(r)) * envelope(r).unsqueeze(-1), 0.0, self.cutoff,
                n_points, dtype=ref.dtype, device=ref.device)

    def untabulate(self) -> None:
        """Back to the filter networks (``tabulate`` undone)."""
        for interaction in self.interactions:
            interaction.table = None

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        r = pair_rows(graph, torch.linalg.norm(edge_vec, dim=-1))  # (E or P,): once per pair
        geometry = {"edge_index": graph["edge_index"]}
        if self.interactions[0].table is not None and not self.training \
                and "edge_mask" not in graph:
            geometry["r"] = r  # (E or P,): the tables take the distance itself
        else:
            geometry["rbf"] = self.rbf(r)  # (E or P, n_rbf)
            geometry["envelope"] = self.envelope(r)  # (E or P,)
        h = self.embedding(graph["species"])  # (N, F)
        return {"h": h}, with_pairs(graph, geometry)

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        self.check_layer(k)
        h = state["h"]
        if "r" in geometry:
            radial = [geometry["r"]]
        else:
            radial = [geometry["rbf"], geometry["envelope"]]
        for index, interaction in enumerate(self.interactions):
            if index == k:
                h = interaction(h, geometry["edge_index"], radial, edge_pair(geometry))  # (N, F)
        return {"h": h}

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return {"scalars": state["h"]}  # (N, F)

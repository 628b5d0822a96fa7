"""NequIP-style representation (Batzner et al., 2022): tensor-product convolutions and gates.

Node features are e3nn irreps ``n_features x (0e + 1o + 2e + ...)`` up to ``l_max``. One
interaction block (one "ConvNetLayer" of NequIP) is

    x_i  = Linear_2( 1/sqrt(avg_num_neighbors) * sum_j TP(Linear_1(h_j), u(r_ij) Y(r_ij); R(r_ij)) )
           + SelfConnection(h_i, z_i)                           (element-dependent linear)
    h_i <- h_i + Gate(x_i)           (residual only where the irreps of h do not change)

with ``Y`` the spherical harmonics of the edge direction (``l <= l_max``), ``TP`` an e3nn
"uvu" (channel-wise) tensor product whose per-edge path weights come from a radial MLP on a
Bessel basis, and ``u`` the smooth ``PolynomialCutoff`` envelope. The first block maps the
scalar species embedding to the full irreps, so it has no residual (as in NequIP). The
convolution, the gate and the irreps helpers are the e3nn toolkit of ``e3nn_tools.py``,
shared with ``mace.py``.

Outputs: ``scalars`` = the ``0e`` channels of the last layer (N, n_features); ``vectors`` =
its ``1o`` channels in Cartesian (x, y, z) order (N, 3, n_features) for the direct force head.

Departures from the published NequIP, and why:

* The tensor product and the gate are the toolkit's (``e3nn_tools.py`` says how they differ
  from e3nn's modules: same numbers, cheaper evaluation, plain TorchScript).
* The cutoff envelope multiplies the spherical harmonics (equivalently the messages)
  instead of the radial-MLP input: the tensor product is linear in ``Y``, so this is the
  same envelope on every message, but it makes energies go to zero at the cutoff for any
  radial MLP (ours has biases; NequIP relies on a bias-free MLP for the same property).
* The per-atom energy is the shared ``EnergyModel`` head (an MLP on the ``0e`` channels)
  instead of NequIP's two linear layers.
* ``avg_num_neighbors`` is a fixed hyper-parameter (default: estimated from the cutoff for
  a condensed phase) rather than computed from the training set.
* ``full_parity=False`` (default) keeps only the irreps with the parity of the spherical
  harmonics (0e, 1o, 2e, ...): cheaper, and the energy stays an O(3) invariant.
  ``full_parity=True`` adds the other parity (0o, 1e, 2o, ...) like NequIP's
  ``parity: true``; pseudo-scalars never reach the energy.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from e3nn import o3

from .e3nn_tools import (Convolution, EdgeEmbedding, Gate, SpeciesLinear, block_offset,
                         TabulatedRadials, cartesian_l1_order, default_avg_num_neighbors,
                         irreps_up_to, to_cartesian)
from .representation import LayeredRepresentation, edge_pair, with_pairs

class InteractionBlock(nn.Module):
    """One NequIP layer: convolution + element-dependent self-connection, gate, residual."""

    def __init__(self, irreps_in: o3.Irreps, irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps,
                 n_species: int, n_rbf: int, radial_hidden: int, radial_layers: int, norm: float):
        super().__init__()
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
        # Only irreps that a tensor product of the input with Y can reach are gated.
        reachable = {ir for _, ir1 in irreps_in for _, ir2 in irreps_sh for ir in ir1 * ir2}
        gated = o3.Irreps([(mul, ir) for mul, ir in gated if ir in reachable])
        scalars = o3.Irreps([(mul, ir) for mul, ir in scalars if ir in reachable])
        self.gate = Gate(scalars, gated)
        self.conv = Convolution(irreps_in, irreps_sh, self.gate.irreps_in, n_rbf, radial_hidden,
                                radial_layers, norm)
        self.self_connection = SpeciesLinear(irreps_in, n_species, self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out
        self.residual = self.irreps_out == o3.Irreps(irreps_in)

    def forward(self, h: Tensor, species: Tensor, sh: Tensor, rbf: Tensor, edge_index: Tensor,
                edge_pair: Optional[Tensor] = None) -> Tensor:
        x = self.conv(h, sh, rbf, edge_index, edge_pair) \
            + self.self_connection(h, species)  # (N, gate_in.dim)
        x = self.gate(x)  # (N, irreps_out.dim)
        if self.residual:
            return h + x  # (N, irreps_out.dim)
        return x  # (N, irreps_out.dim)


class NequIP(TabulatedRadials, LayeredRepresentation):
    """NequIP-style representation (see the module docstring).

    Args:
        n_species: number of elements.
        cutoff: Å; Bessel basis and polynomial envelope span [0, cutoff].
        n_features: channels per irrep.
        n_layers: interaction blocks.
        l_max: highest degree of the spherical harmonics and of the node features.
        n_rbf: Bessel functions.
        radial_hidden, radial_layers: width and depth of the radial MLP.
        full_parity: also carry the irreps of the other parity (0o, 1e, 2o, ...).
        avg_num_neighbors: messages are divided by its square root (default from the cutoff).

    Pieces (``representation.py``): state ``{"h": (N, irreps.dim)}``, exchanged between
    layers; geometry ``edge_index``, ``sh`` (E, sh.dim, envelope included), ``rbf``
    (E, n_rbf) and ``species`` (N,) for the self-connections.
    """

    EDGE_GATE = "sh"  # graph["edge_mask"] multiplies this (representation.py)
    # radial tables: on one H200 (cuEq + compile + edge pairs, float32, 32k Cu atoms) 0.93x
    # the model time at 1.33x the peak memory (262 -> 350 KB/atom; edge_chunk="auto" sizes
    # chunks by free memory); on the 2-core CPU no gain (256 atoms)
    RADIAL_TABLE_AUTO = ("cuda",)

    # A shared hyper-parameter name that does not apply here, and why (read by build_model).
    inapplicable_hparams = {"correlation": "NequIP messages are two-body (one tensor-product "
                                           "convolution per layer); use 'mace' for higher "
                                           "body order"}

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 32,
                 n_layers: int = 3, l_max: int = 2, n_rbf: int = 8, radial_hidden: int = 64,
                 radial_layers: int = 2, full_parity: bool = False,
                 avg_num_neighbors: Optional[float] = None):
        if l_max < 1:
            raise ValueError(f"NequIP needs l_max >= 1 for vector features, got {l_max}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        super().__init__(n_scalars=n_features, n_vectors=n_features, n_layers=n_layers,
                         node_features=["h"])
        if avg_num_neighbors is None:
            avg_num_neighbors = default_avg_num_neighbors(cutoff)
        self.n_species = n_species
        self.embedding = nn.Embedding(n_species, n_features)
        self.edges = EdgeEmbedding(cutoff, l_max, n_rbf)
        hidden = irreps_up_to(n_features, l_max, full_parity)
        norm = 1.0 / math.sqrt(avg_num_neighbors)
        irreps = o3.Irreps(f"{n_features}x0e")
        blocks = []
        for _ in range(n_layers):
            block = InteractionBlock(irreps, hidden, self.edges.irreps_sh, n_species, n_rbf,
                                     radial_hidden, radial_layers, norm)
            blocks.append(block)
            irreps = block.irreps_out
        self.blocks = nn.ModuleList(blocks)
        self.irreps_out = irreps
        # Scalars: the 0e block; it comes first in the gate output.
        if block_offset(irreps, "0e") != 0:
            raise RuntimeError(f"expected the 0e block first in {irreps}")
        self.vector_offset = block_offset(irreps, "1o")
        self.register_buffer("xyz", torch.tensor(cartesian_l1_order(), dtype=torch.long),
                             persistent=False)

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        species = graph["species"]
        sh, rbf = self.edges(edge_vec, graph)  # (E, sh.dim), (E or P, n_rbf)
        geometry = {"edge_index": graph["edge_index"], "sh": sh, "rbf": rbf, "species": species}
        return {"h": self.embedding(species)}, with_pairs(graph, geometry)  # h (N, F): F x 0e

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        self.check_layer(k)
        h = state["h"]
        for index, block in enumerate(self.blocks):
            if index == k:
                h = block(h, geometry["species"], geometry["sh"], geometry["rbf"],
                          geometry["edge_index"], edge_pair(geometry))  # (N, irreps.dim)
        return {"h": h}

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        h = state["h"]
        return {
            "scalars": h[:, : self.n_scalars],  # (N, F)
            "vectors": to_cartesian(h, self.vector_offset, self.n_vectors, self.xyz),  # (N, 3, F)
        }

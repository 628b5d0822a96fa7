"""MACE-style representation (Batatia et al., 2022): many-body messages by symmetric contraction.

One layer ``t`` maps node features ``h_i`` (irreps) to new ones:

1. atomic basis (two-body, as in MACE):
   ``A_i = 1/avg_num_neighbors * Linear( sum_j TP(Linear(h_j), u(r_ij) Y(r_ij); R(r_ij)) )``
   with ``Y`` the spherical harmonics up to ``l_max``, ``R`` a radial MLP on a Bessel basis,
   ``u`` the smooth polynomial envelope, ``TP`` channel-wise ("uvu"). ``A_i`` has
   ``n_features`` channels of every irrep ``0e, 1o, 2e, ... l_max`` (``Convolution`` in
   ``nequip.py``, shared with NequIP).
2. product basis (body order ``correlation + 1``): for every channel ``k`` separately,
   ``B_i,k = sum_{nu=1..correlation} sum_eta w[z_i, eta, k] (A_i,k ⊗ ... ⊗ A_i,k)_eta``
   projected on the hidden irreps (``0e + 1o`` up to ``hidden_l_max``), with weights that
   depend on the element ``z_i`` of the centre atom (``SymmetricContraction``).
3. ``h_i <- Linear(B_i) + SelfConnection(h_i, z_i)`` (element-dependent linear skip, from
   the second layer on, as in MACE's residual interaction block).

What ``SymmetricContraction`` builds, and how it departs from MACE: MACE contracts ``A``
with precomputed generalised Clebsch-Gordan "U matrices" that couple ``nu`` copies of ``A``
symmetrically, with one weight per *independent* coupling. Here the same products are built
from e3nn tensor products: the factor list is ``[1 | A]`` (a constant channel prepended, so
that products of ``correlation`` factors contain every lower order too), and the level-``k``
products are all coupling chains ``((f_1 ⊗ f_2)_L2 ⊗ f_3)_L3 ...`` over the factors taken in
non-decreasing order (every multiset of irreps once), all intermediate ``L`` (both parities)
kept up to what can still couple down to a hidden irrep. Channel-wise ("uuu") e3nn
``TensorProduct``\\ s without weights build levels ``2 .. correlation-1``; the last level is a
"uuu" product whose per-path, per-channel weights are looked up per atom from a table
``(n_species, paths * n_features)``: exactly MACE's element-dependent channel-wise weights.
A left-to-right chain of couplings with all intermediates spans every equivariant map
from ``f_1 ⊗ ... ⊗ f_nu`` to the output irrep, so evaluated on ``A ⊗ ... ⊗ A`` it spans
the same symmetric body-ordered features as MACE's U-matrix basis. The difference is
redundancy: for equal factors some chains are linearly dependent (e.g. three copies of one
``1o`` vector give ``|a|^2 a`` along two chains), so there are more weights than MACE's
count of independent couplings (same function space, some weights degenerate). Only the
couplings that vanish identically at the first product (``(A_l ⊗ A_l)_L`` with ``2l + L``
odd) and the constant (order-0) path are pruned.

Other departures from the published MACE, and why:

* Readout: the ``0e`` channels of *every* layer are concatenated into ``scalars``
  (N, n_layers * n_features) and the shared ``EnergyModel`` head (one MLP) maps them to the
  per-atom energy. MACE sums per-layer readouts (linear for inner layers, an MLP for the
  last); a linear per-layer readout is a special case of a function of the concatenation,
  and one head keeps energies, scale/shift and direct forces in one place for every model.
* The last layer keeps its ``1o`` channels (MACE drops ``l > 0`` there because the energy
  does not use them): they are the ``vectors`` (N, 3, n_features) for the direct force head.
* The cutoff envelope multiplies ``Y`` instead of the radial-MLP input (same envelope on
  every message since the product is linear in ``Y``; keeps the MLP's biases harmless).
* ``avg_num_neighbors`` is a hyper-parameter (default from the cutoff), not fitted to data.
* No "agnostic/non-agnostic" block classes: the first layer differs from the others only by
  its input irreps and ``skip=False``, both constructor arguments of ``MACELayer``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from e3nn import o3

from .nequip import (Convolution, EdgeEmbedding, block_offset, cartesian_l1_order,
                     default_avg_num_neighbors, irreps_up_to, to_cartesian)

# (irrep, index of the last factor used, body order = number of non-constant factors)
_Block = Tuple[o3.Irrep, int, int]


class _Coupling(nn.Module):
    """One product level, channel by channel: p (N, n, D_in) x a (N, n, D_A) -> (N, n, D_out).

    ``coupling`` (D_in * D_A, D_out) holds the Clebsch-Gordan coefficients of every
    instruction of the level (dense; one GEMM on the outer products).
    """

    def __init__(self, coupling: Tensor):
        super().__init__()
        self.d_in, self.d_a, self.d_out = (int(k) for k in coupling.shape)
        self.register_buffer("coupling", coupling.reshape(self.d_in * self.d_a, self.d_out))

    def forward(self, p: Tensor, a: Tensor) -> Tensor:
        n_atoms, n = p.shape[0], p.shape[1]
        outer = (p.unsqueeze(-1) * a.unsqueeze(-2)).reshape(n_atoms * n, self.d_in * self.d_a)  # (N n, D_in D_A)
        return (outer @ self.coupling).reshape(n_atoms, n, self.d_out)  # (N, n, D_out)


class SymmetricContraction(nn.Module):
    """Channel-wise body-ordered products of ``A`` (N, irreps_A) -> (N, irreps_out).

    See the module docstring. All irreps of ``irreps_A`` and ``irreps_out`` carry the same
    number of channels ``n``; ``irreps_out`` lists each irrep once.
    """

    def __init__(self, irreps_A: o3.Irreps, irreps_out: o3.Irreps, correlation: int,
                 n_species: int):
        super().__init__()
        irreps_A, irreps_out = o3.Irreps(irreps_A), o3.Irreps(irreps_out)
        muls = {mul for mul, _ in irreps_A + irreps_out}
        if len(muls) != 1:
            raise ValueError(f"SymmetricContraction needs one channel count, got {irreps_A} -> {irreps_out}")
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        targets = [ir for _, ir in irreps_out]
        if len(set(targets)) != len(targets):
            raise ValueError(f"irreps_out must list each irrep once, got {irreps_out}")
        n = muls.pop()
        self.n_features = n
        factors = [o3.Irrep("0e")] + [ir for _, ir in irreps_A]  # [1 | A]
        factor_start = [sum(f.dim for f in factors[:k]) for k in range(len(factors))]
        d_a = sum(f.dim for f in factors)

        def starts(blocks: List[_Block]) -> List[int]:
            return [sum(b[0].dim for b in blocks[:k]) for k in range(len(blocks))]

        def instructions(blocks: List[_Block], level: int):
            """(block, factor, output irrep, new body order) of the products at ``level``."""
            out = []
            for b, (ir_b, last, order) in enumerate(blocks):
                for k in range(last, len(factors)):  # factors in non-decreasing order
                    for ir in ir_b * factors[k]:
                        # Level-1 blocks are the factors themselves (b == k: the same factor):
                        # an antisymmetric coupling of a vector with itself vanishes.
                        if level == 2 and b == k and (ir_b.l + factors[k].l + ir.l) % 2 == 1:
                            continue
                        out.append((b, k, ir, order + int(k > 0)))
            return out

        def coupling(blocks: List[_Block], paths) -> Tensor:
            """Dense CG tensor (D_in, D_A, D_out) for ``paths``, outputs side by side."""
            d_in = sum(b[0].dim for b in blocks)
            d_out = sum(ir.dim for _, _, ir, _ in paths)
            c = torch.zeros(d_in, d_a, d_out, dtype=torch.float64)
            b_start, col = starts(blocks), 0
            for b, k, ir, _ in paths:
                ir_b, ir_k = blocks[b][0], factors[k]
                w3j = o3.wigner_3j(ir_b.l, ir_k.l, ir.l, dtype=torch.float64)  # (i, j, m)
                c[b_start[b] : b_start[b] + ir_b.dim, factor_start[k] : factor_start[k] + ir_k.dim,
                  col : col + ir.dim] = math.sqrt(ir.dim) * w3j  # e3nn "component" normalisation
                col += ir.dim
            return c.to(torch.get_default_dtype())

        if correlation == 1:
            blocks: List[_Block] = [(o3.Irrep("0e"), 0, 0)]  # just the constant
        else:
            blocks = [(ir, k, int(k > 0)) for k, ir in enumerate(factors)]
        self.start_with_ones = correlation == 1
        levels = []
        for level in range(2, correlation):
            # Keep intermediate irreps that the remaining factors can still couple to a target.
            bound = irreps_out.lmax + (correlation - level) * irreps_A.lmax
            paths = [p for p in instructions(blocks, level) if p[2].l <= bound]
            levels.append(_Coupling(coupling(blocks, paths)))
            blocks = [(ir, k, order) for _, k, ir, order in paths]
        self.levels = nn.ModuleList(levels)
        # Last level: every path into a target irrep (except the constant one), grouped by
        # target, each with its own element-dependent weight per channel.
        final = [p for p in instructions(blocks, max(correlation, 2))
                 if p[2] in targets and p[3] > 0]
        final.sort(key=lambda p: targets.index(p[2]))
        self.contract = _Coupling(coupling(blocks, final))
        self.paths_per_target = [sum(1 for p in final if p[2] == ir) for ir in targets]
        if min(self.paths_per_target) == 0:
            raise ValueError(f"no product of {irreps_A} reaches every irrep of {irreps_out}")
        self.target_dims = [ir.dim for ir in targets]
        self.columns = [k * ir.dim for k, ir in zip(self.paths_per_target, targets)]
        self.weight_rows = [k * n for k in self.paths_per_target]
        # Path normalisation as in e3nn: a sum of P unit-variance paths is divided by sqrt(P).
        self.path_norm = [1.0 / math.sqrt(k) for k in self.paths_per_target]
        self.A_sizes = [ir.dim * n for _, ir in irreps_A]
        self.A_dims = [ir.dim for _, ir in irreps_A]
        self.n_paths = len(final)
        # Element-dependent, channel-wise weight of every coupling path: (Z, paths, n).
        self.weight = nn.Parameter(torch.randn(n_species, self.n_paths, n))
        self.irreps_out = irreps_out

    def forward(self, A: Tensor, species: Tensor) -> Tensor:
        n_atoms, n = A.shape[0], self.n_features
        ones = torch.ones((n_atoms, n, 1), dtype=A.dtype, device=A.device)  # (N, n, 1)
        parts = [ones]
        for k, block in enumerate(torch.split(A, self.A_sizes, dim=1)):
            parts.append(block.reshape(n_atoms, n, self.A_dims[k]))  # e3nn [u][m] -> (N, n, 2l+1)
        factors = torch.cat(parts, dim=2)  # (N, n, D_A)
        p = ones if self.start_with_ones else factors  # (N, n, D_1)
        for level in self.levels:
            p = level(p, factors)  # (N, n, D_k)
        q = self.contract(p, factors)  # (N, n, sum_L P_L (2L+1))
        weights = torch.split(self.weight[species], self.paths_per_target, dim=1)  # [(N, P_L, n)]
        outs: List[Tensor] = []
        for t, q_t in enumerate(torch.split(q, self.columns, dim=2)):
            n_paths, dim = self.paths_per_target[t], self.target_dims[t]
            w = weights[t].transpose(1, 2).unsqueeze(-1)  # (N, n, P_L, 1)
            b = (q_t.reshape(n_atoms, n, n_paths, dim) * w).sum(2) * self.path_norm[t]  # (N, n, 2L+1)
            outs.append(b.reshape(n_atoms, n * dim))  # e3nn layout of n x L
        return torch.cat(outs, dim=1)  # (N, irreps_out.dim)


class MACELayer(nn.Module):
    """Atomic basis -> symmetric contraction -> linear (+ element-dependent skip)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_A: o3.Irreps,
                 irreps_out: o3.Irreps, n_species: int, correlation: int, n_rbf: int,
                 radial_hidden: int, radial_layers: int, norm: float, skip: bool):
        super().__init__()
        self.conv = Convolution(irreps_in, irreps_sh, irreps_A, n_rbf, radial_hidden,
                                radial_layers, norm)
        self.product = SymmetricContraction(irreps_A, irreps_out, correlation, n_species)
        self.linear = o3.Linear(irreps_out, irreps_out)
        self.skip = None
        if skip:
            self.skip = o3.FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{n_species}x0e"),
                                                       irreps_out)
        self.irreps_out = o3.Irreps(irreps_out)

    def forward(self, h: Tensor, species: Tensor, one_hot: Tensor, sh: Tensor, rbf: Tensor,
                edge_index: Tensor) -> Tensor:
        A = self.conv(h, sh, rbf, edge_index)  # (N, irreps_A.dim)
        out = self.linear(self.product(A, species))  # (N, irreps_out.dim)
        skip = self.skip
        if skip is not None:
            out = out + skip(h, one_hot)  # (N, irreps_out.dim)
        return out  # (N, irreps_out.dim)


class MACE(nn.Module):
    """MACE-style representation (see the module docstring).

    Args:
        n_species: number of elements.
        cutoff: Å; Bessel basis and polynomial envelope span [0, cutoff].
        n_features: channels per irrep.
        n_layers: message-passing layers.
        l_max: degree of the spherical harmonics and of the atomic basis ``A`` (>= 2).
        hidden_l_max: degree of the features passed between layers (MACE's ``max_L``);
            0 gives an invariant model without vector features.
        correlation: number of ``A`` factors in the product basis (body order
            ``correlation + 1``), >= 2.
        n_rbf: Bessel functions.
        radial_hidden, radial_layers: width and depth of the radial MLP.
        avg_num_neighbors: messages are divided by it (default from the cutoff).
    """

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 32,
                 n_layers: int = 2, l_max: int = 2, hidden_l_max: int = 1, correlation: int = 3,
                 n_rbf: int = 8, radial_hidden: int = 64, radial_layers: int = 3,
                 avg_num_neighbors: Optional[float] = None):
        super().__init__()
        if l_max < 1 or correlation < 1 or n_layers < 1:
            raise ValueError(f"need l_max >= 1, correlation >= 1, n_layers >= 1; got "
                             f"{l_max}, {correlation}, {n_layers}")
        if not 0 <= hidden_l_max <= l_max:
            raise ValueError(f"hidden_l_max must be in [0, l_max={l_max}], got {hidden_l_max}")
        if avg_num_neighbors is None:
            avg_num_neighbors = default_avg_num_neighbors(cutoff)
        self.n_layers = n_layers
        self.n_features = n_features
        self.n_scalars = n_layers * n_features
        self.n_vectors = n_features if hidden_l_max >= 1 else 0
        self.n_species = n_species
        self.embedding = nn.Embedding(n_species, n_features)
        self.edges = EdgeEmbedding(cutoff, l_max, n_rbf)
        irreps_A = irreps_up_to(n_features, l_max)
        hidden = irreps_up_to(n_features, hidden_l_max)
        irreps = o3.Irreps(f"{n_features}x0e")
        layers = []
        for t in range(n_layers):
            layers.append(MACELayer(irreps, self.edges.irreps_sh, irreps_A, hidden, n_species,
                                    correlation, n_rbf, radial_hidden, radial_layers,
                                    1.0 / avg_num_neighbors, skip=t > 0))
            irreps = hidden
        self.layers = nn.ModuleList(layers)
        self.vector_offset = block_offset(hidden, "1o")
        self.register_buffer("xyz", torch.tensor(cartesian_l1_order(), dtype=torch.long),
                             persistent=False)

    def forward(self, data: Dict[str, Tensor], edge_vec: Tensor) -> Dict[str, Tensor]:
        species = data["species"]
        edge_index = data["edge_index"]
        sh, rbf = self.edges(edge_vec)  # (E, sh.dim), (E, n_rbf)
        one_hot = nn.functional.one_hot(species, self.n_species).to(edge_vec.dtype)  # (N, Z)
        h = self.embedding(species)  # (N, F), irreps F x 0e
        scalars: List[Tensor] = []
        for layer in self.layers:
            h = layer(h, species, one_hot, sh, rbf, edge_index)  # (N, hidden.dim)
            scalars.append(h[:, : self.n_features])  # 0e block first: (N, F)
        out = {"scalars": torch.cat(scalars, dim=-1)}  # (N, n_layers * F)
        if self.n_vectors > 0:
            out["vectors"] = to_cartesian(h, self.vector_offset, self.n_vectors, self.xyz)  # (N, 3, F)
        return out

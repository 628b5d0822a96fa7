"""MACE-style representation (Batatia et al., 2022): many-body messages by symmetric contraction.

One layer ``t`` maps node features ``h_i`` (irreps) to new ones:

1. atomic basis (two-body, as in MACE):
   ``A_i = 1/avg_num_neighbors * Linear( sum_j TP(Linear(h_j), u(r_ij) Y(r_ij); R(r_ij)) )``
   with ``Y`` the spherical harmonics up to ``l_max``, ``R`` a radial MLP on a Bessel basis,
   ``u`` the smooth polynomial envelope, ``TP`` channel-wise ("uvu"). ``A_i`` has
   ``n_features`` channels of every irrep ``0e, 1o, 2e, ... l_max`` (``Convolution`` of
   the e3nn toolkit ``e3nn_tools.py``, shared with NequIP).
2. product basis (body order ``correlation + 1``): for every channel ``k`` separately,
   ``B_i,k = sum_{nu=1..correlation} sum_eta w[z_i, eta, k] (A_i,k ⊗ ... ⊗ A_i,k)_eta``
   projected on the hidden irreps (``0e + 1o`` up to ``hidden_l_max``), with weights that
   depend on the element ``z_i`` of the centre atom (``SymmetricContraction``).
3. ``h_i <- Linear(B_i) + SelfConnection(h_i, z_i)`` (element-dependent linear skip, from
   the second layer on, as in MACE's residual interaction block).

What ``SymmetricContraction`` builds, and how it departs from MACE: MACE contracts ``A``
with precomputed generalised Clebsch-Gordan "U matrices" that couple ``nu`` copies of ``A``
symmetrically, with one weight per *independent* coupling. Here the products are coupling
chains of e3nn irreps instead. The factor list is ``[1 | A]`` (a constant prepended, so that
products of ``correlation`` factors contain every lower order too). Level ``k`` holds all
chains ``((f_1 ⊗ f_2)_L2 ⊗ f_3)_L3 ... ⊗ f_k`` with the factors taken in non-decreasing order
(each multiset of irreps once) and every intermediate irrep (both parities) that can still
couple down to a hidden irrep; the last level keeps the chains that end in a hidden irrep,
each multiplied by its own weight ``w[path, z_i, k]`` (element of the centre atom, channel
``k``: MACE's element-dependent channel-wise weights) and summed per irrep. Each coupling
is e3nn's ``wigner_3j`` with e3nn's "component" normalisation and ``1/sqrt(paths)`` path
normalisation, i.e. the numbers of a chain of channel-wise ("uuu") e3nn tensor
products, which it reproduces to 1e-15; it is evaluated as a sparse table of
the non-zero coefficients (gathers and one ``index_add`` per level over (N, channels)
slabs): a few percent of the dense products, no code generation, plain TorchScript.

A left-to-right chain with all intermediates spans every equivariant map from
``f_1 ⊗ ... ⊗ f_nu`` to the output irrep, so evaluated on ``A ⊗ ... ⊗ A`` the chains span
the same symmetric body-ordered features as MACE's U-matrix basis (checked numerically: for
``l_max`` 2-3 and correlation 2-3 the rank of our features equals the rank of all ordered
chains of all factors). The difference is redundancy: for equal factors some chains are
linearly dependent (three copies of one ``1o`` vector give ``|a|^2 a`` along two chains), so
there are a few more weights than independent couplings (correlation 3, ``l_max`` 2: 9
paths for ``0e``, all independent; 10 for ``1o``, of which 8 are independent). Only
couplings that vanish identically (``(A_l ⊗ A_l)_L`` with ``2l + L`` odd) and the constant
(order-0) path are pruned.

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
* First layer: MACE applies an element-dependent linear map to ``A`` there (its
  ``skip_tp`` on the message); here ``A``'s linear map is shared by all elements in every
  layer, element dependence entering through the contraction weights and the skip.
* No "agnostic/non-agnostic" or "residual/non-residual" block classes: the first layer
  differs from the others only by its input irreps and ``skip=False``, both constructor
  arguments of ``MACELayer``.
* The atomic basis uses the toolkit's tensor product (``e3nn_tools.EdgeTensorProduct``:
  e3nn's "uvu" product, evaluated in a cheaper order), as NequIP does.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from e3nn import o3

from .e3nn_tools import (E3NN_OPTIONS, Convolution, EdgeEmbedding, ExactConstants, block_offset,
                         SpeciesLinear, TabulatedRadials, cartesian_l1_order,
                         default_avg_num_neighbors, irreps_up_to, to_cartesian)
from .chunking import RowChunked
from .representation import LayeredRepresentation, edge_pair, with_pairs

# (irrep, index of the last factor used, body order = number of non-constant factors)
_Block = Tuple[o3.Irrep, int, int]


class _Coupling(ExactConstants):
    """One product level, channel by channel, as a sparse Clebsch-Gordan contraction.

    ``p`` (D_in, N, n) and the factors ``a`` (D_A, N, n) give (D_out, N, n) with
    ``out[g] = sum c * p[i] * a[j]`` over the level's non-zero coefficients ``(i, j, g, c)``
    (a few percent of the dense (D_in, D_A, D_out) tensor). Components lead the layout, so
    every gather and scatter moves whole contiguous (N, n) slabs.

    Evaluated per distinct pair ``(i, g)`` (K of them, ~half the non-zeros): one matrix
    product ``T = M a`` with ``M[k, j] = c(i_k, j, g_k)`` (K, D_A) sums the factor side, then
    ``out[g_k] += p[i_k] * T[k]``. That moves K slabs instead of the non-zeros' five passes
    (two gathers, two products, one scatter) and leaves no (nnz, N, n) temporaries for the
    backward pass. ``i_in``, ``i_factor``, ``i_out`` and ``coefficients`` keep the plain table
    (``cueq.py`` reads it).
    """

    def __init__(self, coupling: Tensor):
        super().__init__()
        self.d_out = int(coupling.shape[2])
        nonzero = (coupling.abs() > 1e-12).nonzero()  # (nnz, 3)
        self.register_buffer("i_in", nonzero[:, 0].contiguous(), persistent=False)
        self.register_buffer("i_factor", nonzero[:, 1].contiguous(), persistent=False)
        self.register_buffer("i_out", nonzero[:, 2].contiguous(), persistent=False)
        coefficients = coupling[nonzero[:, 0], nonzero[:, 1], nonzero[:, 2]]
        self.register_constant("coefficients", coefficients.reshape(-1, 1, 1))
        pairs = sorted({(i, g) for i, _, g in nonzero.tolist()})  # distinct (i, g)
        pair_matrix = torch.stack([coupling[i, :, g] for i, g in pairs])  # (K, D_A)
        self.register_buffer("k_in", torch.tensor([i for i, _ in pairs]), persistent=False)
        self.register_buffer("k_out", torch.tensor([g for _, g in pairs]), persistent=False)
        self.register_constant("pair_matrix", pair_matrix)

    def forward(self, p: Tensor, a: Tensor) -> Tensor:
        n_atoms, n = p.shape[1], p.shape[2]
        t = torch.mm(self.pair_matrix, a.reshape(a.shape[0], n_atoms * n))  # (K, N n)
        products = p.index_select(0, self.k_in) * t.reshape(-1, n_atoms, n)  # (K, N, n)
        out = torch.zeros((self.d_out, n_atoms, n), dtype=p.dtype, device=p.device)
        return out.index_add(0, self.k_out, products)  # (D_out, N, n)


class SymmetricContraction(RowChunked):
    """Channel-wise body-ordered products of ``A`` (N, irreps_A) -> (N, irreps_out).

    See the module docstring. All irreps of ``irreps_A`` and ``irreps_out`` carry the same
    number of channels ``n``; ``irreps_out`` lists each irrep once. Per atom it keeps
    ~500 KB for the backward pass (64 channels, correlation 3): on many atoms it runs in
    checkpointed atom chunks (``RowChunked``, ``chunking.py``).
    """

    def __init__(self, irreps_A: o3.Irreps, irreps_out: o3.Irreps, correlation: int,
                 n_species: int):
        super().__init__()
        irreps_A, irreps_out = o3.Irreps(irreps_A), o3.Irreps(irreps_out)
        muls = {mul for mul, _ in irreps_A + irreps_out}
        if len(muls) != 1:
            raise ValueError("SymmetricContraction needs one channel count, got "
                             f"{irreps_A} -> {irreps_out}")
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

        def coupling(blocks: List[_Block], paths, scale: List[float]) -> Tensor:
            """Dense CG tensor (D_in, D_A, D_out) of ``paths``, outputs side by side."""
            b_start = [sum(b[0].dim for b in blocks[:k]) for k in range(len(blocks))]
            d_in = sum(b[0].dim for b in blocks)
            d_out = sum(ir.dim for _, _, ir, _ in paths)
            c = torch.zeros(d_in, d_a, d_out, dtype=torch.float64)
            col = 0
            for (b, k, ir, _), factor in zip(paths, scale):
                ir_b, ir_k = blocks[b][0], factors[k]
                w3j = o3.wigner_3j(ir_b.l, ir_k.l, ir.l, dtype=torch.float64)  # (i, j, m)
                # e3nn "component" normalisation, times the path normalisation ``factor``
                c[b_start[b] : b_start[b] + ir_b.dim, factor_start[k] : factor_start[k] + ir_k.dim,
                  col : col + ir.dim] = math.sqrt(ir.dim) * factor * w3j
                col += ir.dim
            return c

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
            levels.append(_Coupling(coupling(blocks, paths, [1.0] * len(paths))))
            blocks = [(ir, k, order) for _, k, ir, order in paths]
        self.levels = nn.ModuleList(levels)
        # Last level: every path into a target irrep (except the constant one), each with its
        # own element-dependent weight per channel, summed per target.
        final = [p for p in instructions(blocks, max(correlation, 2))
                 if p[2] in targets and p[3] > 0]
        per_target = [sum(1 for p in final if p[2] == ir) for ir in targets]
        if min(per_target) == 0:
            raise ValueError(f"no product of {irreps_A} reaches every irrep of {irreps_out}")
        # Path normalisation as in e3nn: a sum of P unit-variance paths is divided by sqrt(P).
        scale = [1.0 / math.sqrt(per_target[targets.index(p[2])]) for p in final]
        self.contract = _Coupling(coupling(blocks, final, scale))
        # Row r of the last level (path p, component m) is weighted by weight[p] and added to
        # row target_row[r] of the output (target irrep of p, component m).
        target_start = [sum(ir.dim for ir in targets[:t]) for t in range(len(targets))]
        path_of_row: List[int] = []
        target_row: List[int] = []
        for p, (_, _, ir, _) in enumerate(final):
            path_of_row.extend([p] * ir.dim)
            target_row.extend(target_start[targets.index(ir)] + m for m in range(ir.dim))
        self.register_buffer("path_of_row", torch.tensor(path_of_row), persistent=False)
        self.register_buffer("target_row", torch.tensor(target_row), persistent=False)
        self.d_targets = sum(ir.dim for ir in targets)
        self.target_dims = [ir.dim for ir in targets]
        self.A_sizes = [ir.dim * n for _, ir in irreps_A]
        self.A_dims = [ir.dim for _, ir in irreps_A]
        self.n_paths = len(final)
        # Element-dependent, channel-wise weight of every coupling path: (paths, Z, n).
        self.weight = nn.Parameter(torch.randn(self.n_paths, n_species, n))
        self.irreps_out = irreps_out
        # ``scalars_only``: the 0e block alone (N, n), from the paths into 0e (correlation 3,
        # l_max 3: 94 of the expanded chains' 695 monomials). For a last layer whose vectors
        # nobody reads (``MACE.skip_vectors``); the weights are the same rows of ``weight``.
        self.scalars_only = False
        scalar_paths = [p for p, path in enumerate(final) if path[2] == o3.Irrep("0e")]
        kept = scalar_paths or [0]  # no 0e target: a placeholder (scalars_only is never set)
        self.contract_scalars = _Coupling(coupling(blocks, [final[p] for p in kept],
                                                   [scale[p] for p in kept]))
        self.register_buffer("scalar_paths", torch.tensor(scalar_paths, dtype=torch.long),
                             persistent=False)

    def forward(self, A: Tensor, species: Tensor) -> Tensor:
        return self.map_rows([A, species])  # (N, irreps_out.dim), (N, n) if scalars_only

    def rows(self, inputs: List[Tensor]) -> Tensor:
        A, species = inputs[0], inputs[1]  # (n, irreps_A.dim), (n,)
        n_atoms, n = A.shape[0], self.n_features
        ones = torch.ones((1, n_atoms, n), dtype=A.dtype, device=A.device)  # (1, N, n)
        parts = [ones]
        for k, block in enumerate(torch.split(A, self.A_sizes, dim=1)):
            parts.append(block.reshape(n_atoms, n, self.A_dims[k]).permute(2, 0, 1))  # (2l+1, N, n)
        factors = torch.cat(parts, dim=0)  # (D_A, N, n): [1 | A] component by component
        p = ones if self.start_with_ones else factors  # (D_1, N, n)
        for level in self.levels:
            p = level(p, factors)  # (D_k, N, n)
        if self.scalars_only:
            q = self.contract_scalars(p, factors)  # (paths into 0e, N, n)
            w = self.weight.index_select(0, self.scalar_paths)[:, species]  # (paths, N, n)
            return (q * w).sum(0)  # (N, n): the 0e block
        q = self.contract(p, factors)  # (rows, N, n): every path's output
        w = self.weight.index_select(0, self.path_of_row)[:, species]  # (rows, N, n)
        out = torch.zeros((self.d_targets, n_atoms, n), dtype=A.dtype, device=A.device)
        out = out.index_add(0, self.target_row, q * w)  # (sum_L (2L+1), N, n)
        blocks: List[Tensor] = []
        for b in torch.split(out, self.target_dims, dim=0):
            # e3nn layout of the block n x L: (N, n (2L+1))
            blocks.append(b.permute(1, 2, 0).reshape(n_atoms, n * b.shape[0]))
        return torch.cat(blocks, dim=1)  # (N, irreps_out.dim)


class MACELayer(nn.Module):
    """Atomic basis -> symmetric contraction -> linear (+ element-dependent skip)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_A: o3.Irreps,
                 irreps_out: o3.Irreps, n_species: int, correlation: int, n_rbf: int,
                 radial_hidden: int, radial_layers: int, norm: float, skip: bool):
        super().__init__()
        self.conv = Convolution(irreps_in, irreps_sh, irreps_A, n_rbf, radial_hidden,
                                radial_layers, norm)
        self.product = SymmetricContraction(irreps_A, irreps_out, correlation, n_species)
        self.linear = o3.Linear(irreps_out, irreps_out, **E3NN_OPTIONS)
        self.skip = None
        if skip:
            self.skip = SpeciesLinear(irreps_in, n_species, irreps_out)
        self.irreps_out = o3.Irreps(irreps_out)
        if self.irreps_out[0].ir != o3.Irrep("0e"):
            raise ValueError(f"MACELayer's irreps_out must start with 0e, got {irreps_out}")
        self.dim_out = self.irreps_out.dim

    def forward(self, h: Tensor, species: Tensor, sh: Tensor, rbf: Tensor,
                edge_index: Tensor, edge_pair: Optional[Tensor] = None) -> Tensor:
        """(N, irreps_out.dim); the 0e block alone (N, n) when ``product.scalars_only``."""
        A = self.conv(h, sh, rbf, edge_index, edge_pair)  # (N, irreps_A.dim)
        b = self.product(A, species)  # (N, irreps_out.dim) or (N, n)
        n = b.shape[1]
        if self.product.scalars_only:
            # The linear and the skip map 0e to 0e only: zero l > 0 inputs change no scalar.
            pad = torch.zeros((b.shape[0], self.dim_out - n), dtype=b.dtype,
                              device=b.device)
            b = torch.cat([b, pad], dim=1)  # (N, irreps_out.dim), 0e block first
        out = self.linear(b)  # (N, irreps_out.dim)
        skip = self.skip
        if skip is not None:
            out = out + skip(h, species)  # (N, irreps_out.dim)
        if self.product.scalars_only:
            return out[:, :n]  # (N, n): only the scalars are right
        return out  # (N, irreps_out.dim)


class MACE(TabulatedRadials, LayeredRepresentation):
    """MACE-style representation (see the module docstring).

    Args:
        n_species: number of elements.
        cutoff: Å; Bessel basis and polynomial envelope span [0, cutoff].
        n_features: channels per irrep.
        n_layers: message-passing layers.
        l_max: degree of the spherical harmonics and of the atomic basis ``A`` (MACE's
            ``max_ell``; default 2).
        hidden_l_max: degree of the features passed between layers (MACE's ``max_L``);
            0 gives an invariant model without vector features.
        correlation: number of ``A`` factors in the product basis, body order
            ``correlation + 1`` (default 3; 1 leaves a two-body model).
        n_rbf: Bessel functions.
        radial_hidden, radial_layers: width and depth of the radial MLP.
        avg_num_neighbors: messages are divided by it (default from the cutoff).

    Pieces (``representation.py``): state ``{"h": (N, hidden.dim), "scalars": (N, k F)}``;
    ``h`` is exchanged between layers, ``scalars`` collects the atom's ``0e`` channels of
    every layer. Geometry ``edge_index``, ``species`` (N,), ``sh`` (E, sh.dim, envelope
    included) and ``rbf`` (E, n_rbf).
    """

    EDGE_GATE = "sh"  # graph["edge_mask"] multiplies this (representation.py)
    # radial tables: on one H200 (cuEq + compile + edge pairs, float32) 0.83x / 0.87x the
    # model time at 32k / 131k Cu atoms; on the 2-core CPU no gain (256 atoms)
    RADIAL_TABLE_AUTO = ("cuda",)

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 64,
                 n_layers: int = 2, l_max: int = 2, hidden_l_max: int = 1, correlation: int = 3,
                 n_rbf: int = 8, radial_hidden: int = 64, radial_layers: int = 3,
                 avg_num_neighbors: Optional[float] = None):
        if l_max < 1 or correlation < 1 or n_layers < 1:
            raise ValueError(f"need l_max >= 1, correlation >= 1, n_layers >= 1; got "
                             f"{l_max}, {correlation}, {n_layers}")
        if not 0 <= hidden_l_max <= l_max:
            raise ValueError(f"hidden_l_max must be in [0, l_max={l_max}], got {hidden_l_max}")
        super().__init__(n_scalars=n_layers * n_features,
                         n_vectors=n_features if hidden_l_max >= 1 else 0, n_layers=n_layers,
                         node_features=["h"])
        if avg_num_neighbors is None:
            avg_num_neighbors = default_avg_num_neighbors(cutoff)
        self.n_features = n_features
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

    def skip_vectors(self, skip: bool = True) -> None:
        """Stop (or resume) computing the last layer's ``l > 0`` channels: nothing but the
        direct force head reads them (``vectors``), and without them the last contraction
        runs only its paths into ``0e``. ``EnergyModel`` calls this for heads that read no
        vectors; ``n_vectors`` becomes 0 (no ``vectors`` in the readout) while skipped."""
        self.layers[-1].product.scalars_only = bool(skip)  # its irreps start with 0e
        self.n_vectors = 0 if skip else self.n_features * int(self.vector_offset >= 0)

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        species = graph["species"]
        sh, rbf = self.edges(edge_vec, graph)  # (E, sh.dim), (E or P, n_rbf)
        geometry = {"edge_index": graph["edge_index"], "species": species, "sh": sh,
                    "rbf": rbf}
        h = self.embedding(species)  # (N, F), irreps F x 0e
        scalars = torch.zeros((h.shape[0], 0), dtype=h.dtype, device=h.device)  # (N, 0)
        return {"h": h, "scalars": scalars}, with_pairs(graph, geometry)

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        self.check_layer(k)
        h, scalars = state["h"], state["scalars"]
        for index, block in enumerate(self.layers):
            if index == k:
                h = block(h, geometry["species"], geometry["sh"], geometry["rbf"],
                          geometry["edge_index"], edge_pair(geometry))  # (N, hidden.dim)
                # 0e block first: this layer's scalars (N, F) join the earlier ones.
                scalars = torch.cat([scalars, h[:, : self.n_features]], dim=-1)  # (N, (k+1) F)
        return {"h": h, "scalars": scalars}

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        out = {"scalars": state["scalars"]}  # (N, n_layers * F)
        if self.n_vectors > 0:
            out["vectors"] = to_cartesian(state["h"], self.vector_offset, self.n_vectors,
                                          self.xyz)  # (N, 3, F)
        return out

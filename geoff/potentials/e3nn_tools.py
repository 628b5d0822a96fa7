"""The e3nn toolkit shared by ``nequip.py`` and ``mace.py``: irreps, gates, convolutions.

* ``irreps_up_to``, ``block_offset``, ``cartesian_l1_order``, ``to_cartesian``: irreps
  layouts and the read-out of ``1o`` blocks as Cartesian (N, 3, C) vectors;
* ``EdgeEmbedding``: edge vectors -> enveloped spherical harmonics and a Bessel basis;
* ``EdgeTensorProduct`` and ``Convolution``: the channel-wise ("uvu") tensor-product message
  ``m_i = norm * Linear(sum_j TP(Linear(h_j), u(r_ij) Y(r_ij); R(r_ij)))``, NequIP's
  interaction and MACE's atomic basis ``A_i``; ``tabulate_convolutions``: every ``R(r)``
  (Bessel basis -> radial MLP) read from a ``RadialTable`` in inference;
* ``Gate``: e3nn's gated non-linearity;
* ``SpeciesLinear``: element-dependent linear maps (self-connections, skips);
* ``ExactConstants``: modules whose Clebsch-Gordan buffers stay exact through dtype changes;
* ``default_avg_num_neighbors`` and ``E3NN_OPTIONS``: build defaults.

Departures from e3nn, and why:

* The tensor product is e3nn's "uvu" ``TensorProduct`` in numbers (same Wigner 3j,
  normalisation and path order; checked against e3nn to 1e-15) but evaluated by
  ``EdgeTensorProduct`` in the order that suits a convolution (``Y . w3j`` per edge first,
  then one batched matrix product per input block): about half the time of e3nn's
  generated code forward+backward at these sizes, no code generation when a model is built,
  plain TorchScript.
* ``Gate`` is e3nn's gated non-linearity re-written in ~30 lines, because
  ``e3nn.nn.Gate`` cannot be compiled by ``torch.jit.script`` in e3nn 0.6.0 (its
  ``Activation`` is a ``compile_mode("trace")`` module whose ``paths`` attribute is an
  untyped Python list). Same maths: scalars through SiLU (even) / tanh (odd), every gated
  irrep multiplied by SiLU of its own ``0e`` gate, activations rescaled to unit second
  moment like e3nn's ``normalize2mom`` (the constant is computed by quadrature instead of
  Monte Carlo, so building a model consumes no random numbers beyond its initialisation).
* ``EdgeEmbedding`` multiplies the cutoff envelope into ``Y`` instead of the radial-MLP input:
  a tensor product is linear in ``Y``, so this is the same envelope on every message, and it
  makes energies go to zero at the cutoff for any radial MLP (ours have biases).

e3nn basis convention (checked, not assumed): in e3nn 0.6.0 the ``l = 1`` components and
``Y^1(r)`` are ordered (x, y, z) and ``D^1(R) = R``; older e3nn releases used (y, z, x).
``cartesian_l1_order`` reads the order off e3nn at build time, so both are handled.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn
from e3nn import o3

from .chunking import EdgeMessages
from .layers import BesselBasis, PolynomialCutoff, mlp
from .radial_table import DEFAULT_POINTS, RadialTable, float64_copy
from .representation import pair_rows

# Build options for e3nn's code-generated modules (Linear, self-connection products). Their
# einsum-path search (opt_einsum_fx) costs ~0.3 s per module at build time and buys nothing
# here: Linear contractions have two operands, the self-connections multiply by a one-hot
# species vector, and eager torch.einsum still picks a path at run time.
E3NN_OPTIONS = dict(_optimize_einsums=False)

# Atoms per Å^3 of a typical condensed phase (Cu: 0.085, Si: 0.050, water: 0.100), used
# only to set the default message normalisation from the cutoff.
_TYPICAL_DENSITY = 0.07


def default_avg_num_neighbors(cutoff: float) -> float:
    """Expected neighbours within ``cutoff`` (Å) at a typical condensed-phase density."""
    return max(4.0 / 3.0 * math.pi * cutoff**3 * _TYPICAL_DENSITY, 1.0)


def irreps_up_to(n_features: int, l_max: int, full_parity: bool = False) -> o3.Irreps:
    """``n x 0e + n x 1o + n x 2e + ...`` (and the other parities if ``full_parity``)."""
    out = []
    for l in range(l_max + 1):
        natural = (-1) ** l
        out.append((n_features, (l, natural)))
        if full_parity:
            out.append((n_features, (l, -natural)))
    return o3.Irreps(out)


def cartesian_l1_order() -> List[int]:
    """Indices ``perm`` with ``v_xyz[..., a] = v_e3nn[..., perm[a]]`` for an e3nn ``1o`` irrep.

    Read off e3nn's own spherical harmonics: ``Y^1`` of the unit vector along axis ``a`` is
    non-zero (and positive) only in the component that stores that axis.
    """
    y = o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=True,
                               normalization="component")  # (3 axes, 3 components)
    perm = [int(torch.argmax(y[a].abs())) for a in range(3)]
    expected = torch.zeros(3, 3, dtype=torch.float64)
    for a in range(3):
        expected[a, perm[a]] = math.sqrt(3.0)
    if sorted(perm) != [0, 1, 2] or not torch.allclose(y, expected):
        raise RuntimeError(f"unexpected e3nn l=1 basis (Y^1 of the unit vectors: {y.tolist()})")
    return perm


def block_offset(irreps: o3.Irreps, ir: str) -> int:
    """Start (in the flat irreps layout) of the first block of irrep ``ir``, -1 if absent."""
    target = o3.Irrep(ir)
    offset = 0
    for mul, irrep in irreps:
        if irrep == target:
            return offset
        offset += mul * irrep.dim
    return -1


@functools.lru_cache(maxsize=None)
def _second_moment_scale(name: str) -> float:
    """1 / sqrt(E[f(z)^2]) for z ~ N(0, 1), by quadrature (what e3nn's normalize2mom estimates)."""
    f = {"silu": nn.functional.silu, "tanh": torch.tanh}[name]
    z = torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return float(torch.trapezoid(f(z) ** 2 * density, z).rsqrt())


class Gate(nn.Module):
    """Gated non-linearity: [s_even | s_odd | gates | gated] -> [act(s) | gated * act(gates)].

    ``irreps_scalars`` are ``0e``/``0o`` blocks (SiLU / tanh), ``irreps_gated`` the ``l > 0``
    blocks, each component of which is multiplied by the SiLU of its own ``0e`` gate. Input
    layout ``irreps_in = irreps_scalars + irreps_gates + irreps_gated``; output
    ``irreps_out = irreps_scalars + irreps_gated``. Equivariant: only invariant (``0e``)
    gates scale the ``l > 0`` blocks, and odd scalars go through an odd function.
    """

    def __init__(self, irreps_scalars: o3.Irreps, irreps_gated: o3.Irreps):
        super().__init__()
        irreps_scalars, irreps_gated = o3.Irreps(irreps_scalars), o3.Irreps(irreps_gated)
        if any(ir.l != 0 for _, ir in irreps_scalars) or any(ir.l == 0 for _, ir in irreps_gated):
            raise ValueError("Gate: scalars must be l=0 and gated irreps l>0")
        self.n_even = sum(mul for mul, ir in irreps_scalars if ir.p == 1)
        self.n_odd = sum(mul for mul, ir in irreps_scalars if ir.p == -1)
        parities = [ir.p for _, ir in irreps_scalars]
        if parities != sorted(parities, reverse=True):
            raise ValueError("Gate: put the even scalars before the odd ones")
        self.n_gates = irreps_gated.num_irreps
        self.irreps_gates = o3.Irreps(f"{self.n_gates}x0e") if self.n_gates else o3.Irreps("")
        self.irreps_in = irreps_scalars + self.irreps_gates + irreps_gated
        self.irreps_out = irreps_scalars + irreps_gated
        # Component c of the gated part is scaled by gate gate_index[c].
        index: List[int] = []
        gate = 0
        for mul, ir in irreps_gated:
            for _ in range(mul):
                index.extend([gate] * ir.dim)
                gate += 1
        self.register_buffer("gate_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.silu_scale = _second_moment_scale("silu")
        self.tanh_scale = _second_moment_scale("tanh")

    def forward(self, x: Tensor) -> Tensor:  # (N, irreps_in.dim) -> (N, irreps_out.dim)
        n_s = self.n_even + self.n_odd
        even = nn.functional.silu(x[:, : self.n_even]) * self.silu_scale  # (N, n_even)
        odd = torch.tanh(x[:, self.n_even : n_s]) * self.tanh_scale  # (N, n_odd)
        if self.n_gates == 0:
            return torch.cat([even, odd], dim=-1)  # (N, n_s)
        gates = nn.functional.silu(x[:, n_s : n_s + self.n_gates]) * self.silu_scale  # (N, n_gates)
        gated = x[:, n_s + self.n_gates :] * gates[:, self.gate_index]  # (N, irreps_gated.dim)
        return torch.cat([even, odd, gated], dim=-1)  # (N, irreps_out.dim)


class SpeciesLinear(nn.Module):
    """Element-dependent linear map of irreps, ``(N, irreps_in.dim), (N,) -> (N, irreps_out.dim)``.

    In numbers e3nn's ``FullyConnectedTensorProduct(irreps_in, f"{n_species}x0e",
    irreps_out)`` on a one-hot species vector (NequIP's self-connection, MACE's skip): the
    same flat ``weight`` (and ``output_mask``), the same initialisation and checkpoint keys.
    e3nn evaluates it by building each atom's weight matrix, (N, mul_in, mul_out) per block,
    then a batched product: at 131k atoms and 64 channels that is a 2 GB copy per block and
    13 % of a MACE-style call on an H200. Here, when ``n_species * (2l + 1) <= mul_in``, a
    block is one matrix product against every element's weights, ``(N (2l+1), mul_in) @
    (mul_in, Z mul_out)``, and each atom keeps its element's columns: Z (2l+1) mul_out
    floats per atom instead of mul_in mul_out. Other blocks take e3nn's order.
    """

    def __init__(self, irreps_in: o3.Irreps, n_species: int, irreps_out: o3.Irreps):
        super().__init__()
        reference = o3.FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{n_species}x0e"),
                                                   irreps_out, **E3NN_OPTIONS)
        if not reference.instructions:
            raise ValueError(f"SpeciesLinear: no irrep of {irreps_in} maps to {irreps_out}")
        self.irreps_in, self.irreps_out = reference.irreps_in1, reference.irreps_out
        self.n_species = n_species
        self.weight = reference.weight  # (sum of mul_in Z mul_out,) e3nn's layout
        self.register_buffer("output_mask", reference.output_mask)  # kept: checkpoint keys
        in_slices, out_slices = self.irreps_in.slices(), self.irreps_out.slices()
        # (in start, out start, mul_in, mul_out, 2l+1, weight start, by matmul) per path;
        # scale: e3nn's path weight times w3j(l, 0, l) = 1 / sqrt(2l + 1)
        self.paths = []  # TorchScript infers List[List[int]] from the (non-empty) values
        scales = []
        w_start = 0
        for ins in reference.instructions:
            mul_in, ir = self.irreps_in[ins.i_in1]
            mul_out = self.irreps_out[ins.i_out].mul
            by_matmul = int(n_species * ir.dim <= mul_in)
            self.paths.append([in_slices[ins.i_in1].start, out_slices[ins.i_out].start, mul_in,
                               mul_out, ir.dim, w_start, by_matmul])
            scales.append(ins.path_weight / math.sqrt(ir.dim))
            w_start += mul_in * n_species * mul_out
        self.scales = scales
        self.dim_out = self.irreps_out.dim

    def forward(self, x: Tensor, species: Tensor) -> Tensor:
        n_atoms = x.shape[0]
        out = torch.zeros((n_atoms, self.dim_out), dtype=x.dtype, device=x.device)
        for path, scale in zip(self.paths, self.scales):
            i0, o0, mul_in, mul_out, d, w0, by_matmul = path
            w = self.weight[w0 : w0 + mul_in * self.n_species * mul_out].view(
                mul_in, self.n_species, mul_out) * scale  # (u, Z, w)
            xb = x[:, i0 : i0 + mul_in * d].reshape(n_atoms, mul_in, d)  # (N, u, 2l+1)
            if by_matmul == 1:
                y = torch.mm(xb.transpose(1, 2).reshape(n_atoms * d, mul_in),
                             w.reshape(mul_in, self.n_species * mul_out))  # (N d, Z w)
                y = y.view(n_atoms, d, self.n_species, mul_out)
                pick = species.view(n_atoms, 1, 1, 1).expand(n_atoms, d, 1, mul_out)
                yb = y.gather(2, pick).view(n_atoms, d, mul_out).transpose(1, 2)  # (N, w, d)
            else:
                per_atom = w.permute(1, 0, 2).index_select(0, species)  # (N, u, w)
                yb = torch.bmm(per_atom.transpose(1, 2), xb)  # (N, w, d)
            out[:, o0 : o0 + mul_out * d] += yb.reshape(n_atoms, mul_out * d)
        return out  # (N, irreps_out.dim)


class ExactConstants(nn.Module):
    """A module whose float buffers are exact constants (Clebsch-Gordan coefficients).

    ``Module.float()`` then ``.double()`` (or ``geoff.load`` of a float32 checkpoint asked
    for float64) would round such a buffer through float32 and leave float64 evaluations
    equivariant to only ~2.5e-10 relative (measured on a small MACE; the tests ask for
    1e-10). Here every dtype or device change re-derives the buffers from float64 master
    copies, so they are exact in whatever dtype the module is in. The buffers are not
    persistent: they belong to the architecture, not to the checkpoint.
    """

    def register_constant(self, name: str, value: Tensor) -> None:
        self.register_buffer(name, value.to(torch.get_default_dtype()), persistent=False)
        # numpy, not a tensor attribute: TorchScript skips it, and Module._apply cannot touch it
        master = value.detach().to(torch.float64).cpu().numpy()
        self.__dict__.setdefault("_masters", {})[name] = master

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        for name, master in self.__dict__.get("_masters", {}).items():
            current = getattr(self, name)
            exact = torch.from_numpy(master).to(dtype=current.dtype, device=current.device)
            setattr(self, name, exact)
        return out


class _CouplingBlock(ExactConstants):
    """All paths of one input block ``mul x ir1``, grouped by output dimension ``d``.

    ``coupling`` (sh_dim, R, 2 l1 + 1) stacks, group after group, sqrt(d) * w3j(l1, l2, l3)
    of the group's P paths as rows ``(d, P)`` (zero outside each path's own ``l2`` entries):
    ``R = sum_g d_g P_g``. One batched matrix product per input block, then the weights per
    group. Output layout per edge: groups side by side, each ``(d, P, mul)`` with the
    channels innermost so that the weight product vectorises.
    """

    def __init__(self, mul: int, dim_in: int, groups: List[Tensor]):
        super().__init__()
        self.mul = mul
        self.dim_in = dim_in
        self.dims = [int(g.shape[1]) for g in groups]  # d of each group
        self.n_paths = [int(g.shape[2]) for g in groups]  # P of each group
        self.rows = [d * p for d, p in zip(self.dims, self.n_paths)]
        coupling = torch.cat([g.reshape(g.shape[0], -1, dim_in) for g in groups], dim=1)
        self.total_rows = int(coupling.shape[1])
        self.register_constant("coupling", coupling.reshape(coupling.shape[0], -1))

    def forward(self, x: Tensor, sh: Tensor, weight: Tensor) -> List[Tensor]:
        """x (E, mul * (2 l1 + 1)) this block, sh (E, sh_dim), weight (E, sum P * mul)."""
        n_edges = x.shape[0]
        xb = x.reshape(n_edges, self.mul, self.dim_in).transpose(1, 2)  # (E, 2 l1 + 1, mul)
        t = (sh @ self.coupling).reshape(n_edges, self.total_rows, self.dim_in)  # (E, R, 2 l1 + 1)
        if self.dim_in == 1:
            out = t * xb  # (E, R, mul); a broadcast beats a batch of rank-1 matmuls
        else:
            out = torch.bmm(t, xb)  # (E, R, mul)
        outs = torch.split(out, self.rows, dim=1)
        ws = torch.split(weight, [p * self.mul for p in self.n_paths], dim=1)
        pieces: List[Tensor] = []
        for g in range(len(self.rows)):
            d, n_p = self.dims[g], self.n_paths[g]
            w = ws[g].reshape(n_edges, 1, n_p, self.mul)  # (E, 1, P, mul)
            piece = outs[g].reshape(n_edges, d, n_p, self.mul) * w  # (E, d, P, mul)
            pieces.append(piece.reshape(n_edges, d * n_p * self.mul))  # (E, d P mul)
        return pieces


class EdgeTensorProduct(nn.Module):
    """Channel-wise ("uvu") tensor product of edge-gathered node features with Y(r_ij).

    Numerically e3nn's ``TensorProduct(irreps_in, irreps_sh, ..., "uvu", shared_weights=False)``
    with one output block per path (component normalisation; checked against e3nn to 1e-15),
    but computed in the order that suits a convolution: first ``T = Y . w3j`` per edge
    (independent of the channels), then one batched matrix product per input block
    ``T (R, 2 l1 + 1) @ x (2 l1 + 1, mul)``, then the per-edge, per-channel path weights.
    That costs ``E * mul * (2 l1 + 1) * (2 l3 + 1)`` per path instead of e3nn's
    ``E * mul * (2 l1 + 1) * (2 l2 + 1) * (2 l3 + 1)``, needs no code generation at build
    time, and is plain TorchScript.

    Paths are numbered by (input block, output dimension); that is the order of
    ``irreps_out`` and of the weights (E, n_paths * mul), laid out like e3nn's ([path][channel]).
    The output (E, D) is in an internal layout; ``to_irreps`` is the index that puts it into
    e3nn's ``irreps_out`` layout (one ``mul x ir3`` block per path).
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, wanted: List[o3.Irrep]):
        super().__init__()
        irreps_in, irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        muls = {mul for mul, _ in irreps_in}
        if len(muls) != 1:
            raise ValueError(f"EdgeTensorProduct needs one channel count, got {irreps_in}")
        mul = muls.pop()
        sh_slices = irreps_sh.slices()
        blocks = []
        inputs: List[int] = []  # input block of each coupling block
        paths: List[o3.Irrep] = []  # output irrep of each path
        to_irreps: List[List[int]] = []  # internal positions of each path's (u, k) entries
        position = 0
        for b, (_, ir1) in enumerate(irreps_in):
            by_dim: Dict[int, List[Tensor]] = {}
            by_dim_irreps: Dict[int, List[o3.Irrep]] = {}
            for s, (_, ir2) in enumerate(irreps_sh):
                for ir3 in ir1 * ir2:
                    if ir3 not in wanted:
                        continue
                    w3j = o3.wigner_3j(ir1.l, ir2.l, ir3.l, dtype=torch.float64)  # (i, j, k)
                    c = torch.zeros(irreps_sh.dim, ir3.dim, ir1.dim, dtype=torch.float64)
                    c[sh_slices[s]] = math.sqrt(ir3.dim) * w3j.permute(1, 2, 0)
                    by_dim.setdefault(ir3.dim, []).append(c)
                    by_dim_irreps.setdefault(ir3.dim, []).append(ir3)
            if not by_dim:
                continue
            groups = []
            for d in sorted(by_dim):
                coupling = torch.stack(by_dim[d], dim=2)  # (J, d, P, i), float64
                groups.append(coupling)
                n_p = coupling.shape[2]
                for p in range(n_p):
                    to_irreps.append([position + (k * n_p + p) * mul + u
                                      for u in range(mul) for k in range(d)])
                paths.extend(by_dim_irreps[d])
                position += d * n_p * mul
            blocks.append(_CouplingBlock(mul, ir1.dim, groups))
            inputs.append(b)
        if not paths:
            raise ValueError(f"no path from {irreps_in} x {irreps_sh} to {wanted}")
        self.blocks = nn.ModuleList(blocks)
        self.inputs = inputs
        self.mul = mul
        self.n_paths = len(paths)
        self.weight_numel = mul * len(paths)
        self.dim = position
        self.irreps_out = o3.Irreps([(mul, ir3) for ir3 in paths])
        # torch.split (whose backward is one cat) instead of slices (one zero-filled
        # full-size gradient per slice).
        self.x_sizes = [mul * ir.dim for _, ir in irreps_in]
        self.w_sizes = [sum(block.n_paths) * mul for block in blocks]
        index = [i for block in to_irreps for i in block]
        self.register_buffer("to_irreps", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: Tensor, sh: Tensor, weight: Tensor) -> List[Tensor]:
        """x (E, irreps_in.dim), sh (E, irreps_sh.dim), weight (E, n_paths * mul).

        Returns the output in pieces (E, D_k) whose concatenation along dim 1 is the internal
        layout (E, dim): callers that sum over edges first concatenate only the node rows.
        """
        xs = torch.split(x, self.x_sizes, dim=1)  # per input block (E, mul * (2 l1 + 1))
        ws = torch.split(weight, self.w_sizes, dim=1)  # per coupling block (E, P * mul)
        pieces: List[Tensor] = []
        for k, block in enumerate(self.blocks):
            pieces.extend(block(xs[self.inputs[k]], sh, ws[k]))  # [(E, d P mul)]
        return pieces


class Convolution(EdgeMessages):
    """m_i = norm * Linear_out( sum_j TP(Linear_in(h_j), Y_ij; R(r_ij)) ): an equivariant message.

    ``TP`` is the channel-wise ("uvu") tensor product of every input block with every
    spherical harmonic, keeping only the output irreps that ``irreps_out`` contains, one
    output block per path (``EdgeTensorProduct``); its per-edge path weights ``R(r_ij)``
    come from an MLP on the radial basis. ``Y_ij`` is expected to carry the cutoff envelope
    already. This is NequIP's interaction and MACE's atomic basis ``A_i`` (``norm =
    1/sqrt(avg)`` in NequIP, ``1/avg`` in MACE). ``Linear_out`` mixes the paths that lead to
    the same irrep. The radial MLP (``radial_terms``: once per pair of reverse edges when the
    graph has them) and the tensor product are per-edge (chunked by ``EdgeMessages``).
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps,
                 n_rbf: int, radial_hidden: int, radial_layers: int, norm: float):
        super().__init__()
        irreps_in, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.linear_in = o3.Linear(irreps_in, irreps_in, **E3NN_OPTIONS)
        self.tp = EdgeTensorProduct(irreps_in, irreps_sh, [ir for _, ir in irreps_out])
        self.radial = mlp([n_rbf] + [radial_hidden] * radial_layers + [self.tp.weight_numel])
        self.linear_out = o3.Linear(self.tp.irreps_out, irreps_out, **E3NN_OPTIONS)
        self.norm = float(norm)
        self.irreps_out = irreps_out
        self.table: Optional[RadialTable] = None  # R(r) (tabulate_convolutions)

    def radial_terms(self, inputs: List[Tensor]) -> List[Tensor]:
        table = self.table
        if table is not None and inputs[0].dim() == 1:  # [r (rows,)]: read from the table
            return [table(inputs[0])]  # (rows, tp.weight_numel)
        return [self.radial(inputs[0])]  # (rows, n_rbf) -> (rows, tp.weight_numel)

    def messages(self, nodes: List[Tensor], edges: List[Tensor], senders: Tensor) -> List[Tensor]:
        w, sh = edges[0], edges[1]  # (E, tp.weight_numel), (E, irreps_sh.dim)
        return self.tp(nodes[0].index_select(0, senders), sh, w)  # [(E, D_k)]

    def finish(self, sums: List[Tensor]) -> List[Tensor]:
        summed = torch.cat(sums, dim=1)  # (n, tp.dim)
        summed = summed.index_select(1, self.tp.to_irreps) * self.norm  # (n, tp.irreps_out.dim)
        return [self.linear_out(summed)]  # (n, irreps_out.dim)

    def forward(self, h: Tensor, sh: Tensor, rbf: Tensor, edge_index: Tensor,
                edge_pair: Optional[Tensor] = None) -> Tensor:
        """``rbf``: (E, n_rbf), or (P, n_rbf) per pair of reverse edges with ``edge_pair``;
        with a table the distances (E,) or (P,) instead."""
        return self.aggregate([self.linear_in(h)], [rbf], [sh], edge_index, h.shape[0],
                              edge_pair)[0]


class EdgeEmbedding(nn.Module):
    """Edge vectors -> (u(r) Y(r_hat) (E, irreps_sh.dim), Bessel basis (E, n_rbf))."""

    def __init__(self, cutoff: float, l_max: int, n_rbf: int):
        super().__init__()
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.envelope = PolynomialCutoff(cutoff)
        self.tabulated = False  # the convolutions read R(r) from tables (distances, not rbf)

    def forward(self, edge_vec: Tensor, graph: Dict[str, Tensor]):
        """The Bessel basis (E or P, n_rbf), once per pair of reverse edges when ``graph``
        has edge pairs; the distances (E or P,) instead when the convolutions are tabulated
        (inference)."""
        r = torch.linalg.norm(edge_vec, dim=-1)  # (E,)
        sh = self.sh(edge_vec) * self.envelope(r).unsqueeze(-1)  # (E, irreps_sh.dim)
        if self.tabulated and not self.training:
            return sh, pair_rows(graph, r)  # (E, irreps_sh.dim), (E or P,)
        return sh, self.rbf(pair_rows(graph, r))  # (E, irreps_sh.dim), (E or P, n_rbf)


# Tables start here (in units of the cutoff): the Bessel basis is sin(k r) / r, whose float64
# value at r = 0 is nan; atoms this close never meet in a model's domain.
_TABLE_START = 1e-3


def tabulate_convolutions(module: nn.Module, edges: EdgeEmbedding,
                          n_points: int = DEFAULT_POINTS) -> int:
    """Read every ``Convolution``'s ``R(r) = radial(rbf(r))`` in ``module`` from a
    ``RadialTable`` (inference): sampled now in float64 on [1e-3 cutoff, cutoff], stored in
    the model's dtype and device. Returns the count. Training mode runs the networks
    (``EdgeEmbedding`` then hands out the basis, not distances)."""
    convolutions = [m for m in module.modules() if isinstance(m, Convolution)]
    cutoff = edges.rbf.cutoff
    rbf = float64_copy(edges.rbf)
    for conv in convolutions:
        ref = next(conv.radial.parameters())
        radial64 = float64_copy(conv.radial)
        conv.table = RadialTable(lambda r, f=radial64: f(rbf(r)), _TABLE_START * cutoff, cutoff,
                                 n_points, dtype=ref.dtype, device=ref.device)
    edges.tabulated = len(convolutions) > 0
    return len(convolutions)


class TabulatedRadials:
    """``tabulate`` / ``untabulate`` for a representation with ``edges`` (``EdgeEmbedding``)
    and ``Convolution`` layers (NequIP-style, MACE-style); ``tabulate_radial`` calls them."""

    def tabulate(self, n_points: int = DEFAULT_POINTS) -> None:
        """Each convolution's radial MLP read from a ``RadialTable`` (inference)."""
        tabulate_convolutions(self, self.edges, n_points)

    def untabulate(self) -> None:
        """Back to the radial networks (``tabulate`` undone)."""
        for conv in self.modules():
            if isinstance(conv, Convolution):
                conv.table = None
        self.edges.tabulated = False


def to_cartesian(x: Tensor, offset: int, mul: int, xyz: Tensor) -> Tensor:
    """The ``mul x 1o`` block of ``x`` starting at ``offset`` as (N, 3, mul) in (x, y, z) order."""
    v = x[:, offset : offset + 3 * mul].reshape(x.shape[0], mul, 3)  # (N, mul, 3), e3nn order
    return v.index_select(2, xyz).transpose(1, 2)  # (N, 3, mul)

"""cuEquivariance kernels for the e3nn toolkit: the same weights, fused GPU kernels.

``accelerate(model)`` swaps, in place, every ``Convolution`` (NequIP-style and MACE-style)
and every ``SymmetricContraction`` (MACE-style) for a module that shares its parameters and
runs its tensor products through NVIDIA's cuEquivariance (``pip install geoff[cuda]`` plus
the ``cuequivariance-ops-torch-cu12`` or ``-cu13`` wheel for your CUDA). ``restore(model)``
swaps them back. The state dict keeps its keys and values: checkpoints do not change.

* Convolution: gather of the sender features -> channel-wise ("uvu") product with ``Y(r_ij)``
  and the per-edge radial weights -> sum into the receivers, as ONE kernel
  (``uniform_1d``: every segment is one channel vector): no per-edge irreps tensor is kept.
* SymmetricContraction: geoff's coupling chains expanded into one polynomial in ``A``
  (degree <= correlation) with element-indexed, channel-wise weights: one fused kernel.

Both descriptors are built FROM geoff's own coupling tables (``EdgeTensorProduct``'s
``sqrt(d) w3j`` blocks, ``SymmetricContraction``'s sparse chain tables with their path
normalisation), so the two paths agree by construction up to float round-off; the output
layouts are geoff's (``to_irreps`` and the e3nn block layout apply unchanged).

Where it runs: ``method="uniform_1d"`` needs a CUDA GPU and ``cuequivariance_ops_torch``;
elsewhere (the CPU, tests) ``"naive"``, cuEquivariance's pure-torch evaluation (correct,
slow). TorchScript (``geoff export``, the LAMMPS plugin) keeps the e3nn path:
``geoff.export`` calls ``restore`` on its copy before ``torch.jit.script``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .chunking import DEFAULT_EDGE_CHUNK, EdgeMessages, RowChunked
from .e3nn_tools import Convolution, EdgeTensorProduct
from .mace import SymmetricContraction

INSTALL = ("pip install 'geoff[cuda]' cuequivariance-ops-torch-cu12  "
           "(or -cu13: the wheel that matches your CUDA)")
KERNELS = ("e3nn", "cueq", "auto")


def _cue():
    """The cuequivariance modules, or an ImportError naming the install line."""
    try:
        import cuequivariance as cue
        import cuequivariance_torch as cuet
    except ImportError as exc:
        raise ImportError(f"kernels='cueq' needs cuEquivariance: {INSTALL}") from exc
    return cue, cuet


def installed() -> bool:
    """cuequivariance and cuequivariance_torch importable (the CPU "naive" method runs)."""
    try:
        _cue()
    except ImportError:
        return False
    return True


def available(device=None) -> bool:
    """cuEquivariance's GPU kernels importable (and ``device``, if given, a CUDA device)."""
    if device is not None and torch.device(device).type != "cuda":
        return False
    try:
        import cuequivariance_ops_torch  # noqa: F401
        _cue()
    except ImportError:
        return False
    return True


def _master(module, name: str) -> np.ndarray:
    """The exact float64 copy of an ``ExactConstants`` buffer."""
    return module.__dict__["_masters"][name]


def _ir_mul_order(sizes: List[int], mul: int) -> Tensor:
    """Index taking blocks laid out (mul, d) (e3nn) to (d, mul) (cuEquivariance's ir_mul)."""
    index, start = [], 0
    for size in sizes:
        d = size // mul
        index.extend(start + u * d + m for m in range(d) for u in range(mul))
        start += size
    return torch.tensor(index, dtype=torch.long)


def convolution_polynomial(tp: EdgeTensorProduct):
    """``EdgeTensorProduct`` as a cuEquivariance polynomial ``[w, x, sh] -> out``.

    Operands, each segment one channel vector (u = mul) or one scalar: ``w`` (E, n_paths mul)
    geoff's weight layout [path][channel]; ``x`` (N, dim) the input irreps in ir_mul layout
    (segment = one component of one block); ``sh`` (E, sh_dim) scalars; ``out`` geoff's
    internal layout (segment = one row of a coupling block). One path per non-zero entry of
    each block's ``coupling`` (sqrt(d) w3j), with that coefficient.
    """
    cue, _ = _cue()
    mul = tp.mul
    stp = cue.SegmentedTensorProduct.from_subscripts("u,u,,u")
    sh_dim = int(_master(tp.blocks[0], "coupling").shape[0])
    for _ in range(tp.n_paths):
        stp.add_segment(0, (mul,))
    for _ in range(sum(tp.x_sizes) // mul):
        stp.add_segment(1, (mul,))
    for _ in range(sh_dim):
        stp.add_segment(2, ())
    for _ in range(tp.dim // mul):
        stp.add_segment(3, (mul,))
    x_start = np.cumsum([0] + tp.x_sizes) // mul
    row_base = path_base = 0
    for k, block in enumerate(tp.blocks):
        coupling = _master(block, "coupling").reshape(sh_dim, block.total_rows, block.dim_in)
        path_of_row, first = [], path_base
        for d, n_p in zip(block.dims, block.n_paths):  # rows of a group: (d, P), P fastest
            path_of_row.extend(first + r % n_p for r in range(d * n_p))
            first += n_p
        for j, r, i in zip(*(a.tolist() for a in np.nonzero(np.abs(coupling) > 1e-12))):
            stp.add_path(path_of_row[r], int(x_start[tp.inputs[k]]) + i, j, row_base + r,
                         c=float(coupling[j, r, i]))
        row_base += block.total_rows
        path_base = first
    return cue.SegmentedPolynomial.eval_last_operand(stp)


def _expand_chain(sc: SymmetricContraction) -> Dict[Tuple[int, Tuple[int, ...], int], float]:
    """{(path, sorted A components, output row): coefficient} of ``sc``'s chain tables.

    Multiplies out the levels of the sparse coupling chain (float64): component ``f`` of the
    factor list ``[1 | A]`` is ``A[f - 1]`` for f > 0, the constant for f = 0.
    """
    n_factors = sum(sc.A_dims) + 1
    if sc.start_with_ones:
        p = [{(): 1.0}]
    else:
        p = [{(): 1.0}] + [{(f,): 1.0} for f in range(1, n_factors)]

    def level(p, coupling):
        out = [defaultdict(float) for _ in range(coupling.d_out)]
        c = _master(coupling, "coefficients").reshape(-1)
        for i, j, g, v in zip(coupling.i_in.tolist(), coupling.i_factor.tolist(),
                              coupling.i_out.tolist(), c):
            for mono, w in p[i].items():
                out[g][tuple(sorted(mono + ((j,) if j else ())))] += w * v
        return out

    for coupling in sc.levels:
        p = level(p, coupling)
    q = level(p, sc.contract)
    terms: Dict[Tuple[int, Tuple[int, ...], int], float] = defaultdict(float)
    for r, (path, row) in enumerate(zip(sc.path_of_row.tolist(), sc.target_row.tolist())):
        for mono, w in q[r].items():
            terms[(path, tuple(f - 1 for f in mono), row)] += w
    return terms


def contraction_polynomial(sc: SymmetricContraction, scalars_only: bool = False):
    """``SymmetricContraction`` as a polynomial ``[w (Z, paths n), A (N, ir_mul)] -> out``.

    One operation per degree ``D`` (w, A x D, out), each path one monomial of the expanded
    chains; ``out`` (N, d_targets n) in ir_mul layout, component ``t`` = geoff's target row.
    ``scalars_only``: the monomials of the 0e target alone, ``out`` (N, n).
    """
    cue, _ = _cue()
    n = sc.n_features
    scalar_row = -1  # geoff's output row of the 0e target
    if scalars_only:
        scalar_row = int(sc.target_row[sc.path_of_row.tolist().index(int(sc.scalar_paths[0]))])
    by_degree: Dict[int, list] = defaultdict(list)
    for (path, mono, row), c in _expand_chain(sc).items():
        if scalars_only and row != scalar_row:
            continue
        if abs(c) > 1e-14 and mono:  # the constant path is pruned by construction
            by_degree[len(mono)].append((path, mono, 0 if scalars_only else row, c))
    operations = []
    for degree in sorted(by_degree):
        stp = cue.SegmentedTensorProduct.from_subscripts(",".join(["u"] * (degree + 2)))
        for operand, count in [(0, sc.n_paths)] + [(1 + k, sum(sc.A_dims))
                                                   for k in range(degree)] + \
                [(degree + 1, 1 if scalars_only else sc.d_targets)]:
            for _ in range(count):
                stp.add_segment(operand, (n,))
        for path, mono, row, c in by_degree[degree]:
            stp.add_path(path, *mono, row, c=c)
        operations.append((cue.Operation([0] + [1] * degree + [2]), stp))
    stp = operations[0][1]
    return cue.SegmentedPolynomial([stp.operands[0], stp.operands[1]], [stp.operands[-1]],
                                   operations)


def _kernel(polynomial, method: str, dtype: torch.dtype, device) -> nn.Module:
    _, cuet = _cue()
    math_dtype = None if method == "uniform_1d" else dtype  # uniform_1d: the inputs' dtype
    return cuet.SegmentedPolynomial(polynomial, method=method, math_dtype=math_dtype).to(device)


def _drop_kernel_keys(module, state_dict, prefix, local_metadata):
    """State-dict hook: the kernels' constants are not part of a checkpoint."""
    kernels = (prefix + "kernel.", prefix + "scalar_kernel.")
    for key in [k for k in state_dict if k.startswith(kernels)]:
        del state_dict[key]


class CueqConvolution(Convolution):
    """``Convolution`` whose gather -> tensor product -> scatter is one cuEquivariance kernel.

    Shares ``linear_in``, ``tp`` (coupling tables, ``to_irreps``), ``radial`` and
    ``linear_out`` with the e3nn module it replaces; ``finish`` and edge chunking unchanged.
    """

    def __init__(self, conv: Convolution, method: str):
        EdgeMessages.__init__(self, conv.edge_chunk)
        self.linear_in, self.tp, self.radial = conv.linear_in, conv.tp, conv.radial
        self.linear_out, self.norm, self.irreps_out = conv.linear_out, conv.norm, conv.irreps_out
        self.table = conv.table
        weight = next(conv.parameters())
        self.kernel = _kernel(convolution_polynomial(conv.tp), method, weight.dtype,
                              weight.device)
        self.register_buffer("x_order", _ir_mul_order(conv.tp.x_sizes, conv.tp.mul).to(
            weight.device), persistent=False)
        self._register_state_dict_hook(_drop_kernel_keys)
        self.__dict__["e3nn_module"] = conv  # what ``restore`` puts back (not a submodule)

    def sums(self, nodes: List[Tensor], edges: List[Tensor], receivers: Tensor, senders: Tensor,
             n_nodes: int) -> List[Tensor]:
        w, sh = edges[0], edges[1]  # (E, tp.weight_numel), (E, sh_dim)
        return [self._fused(w, nodes[0], sh, receivers, senders, n_nodes)]

    def _fused(self, w: Tensor, x: Tensor, sh: Tensor, receivers: Tensor, senders: Tensor,
               n_nodes: int, w_index: Optional[Tensor] = None) -> Tensor:
        """The kernel: (n_nodes, tp.dim) sums in geoff's internal layout; ``x`` (N, ...) in
        ir_mul layout, gathered by ``senders``; ``w`` per edge, or per pair with ``w_index``."""
        shape = torch.empty((n_nodes, 1), dtype=x.dtype, device=x.device)
        gathers = {1: senders} if w_index is None else {0: w_index, 1: senders}
        [out] = self.kernel([w, x, sh], input_indices=gathers, output_indices={0: receivers},
                            output_shapes={0: shape})
        return out

    def aggregate(self, nodes: List[Tensor], radial_inputs: List[Tensor], edges: List[Tensor],
                  edge_index: Tensor, n_nodes: int,
                  edge_pair: Optional[Tensor] = None) -> List[Tensor]:
        """With edge pairs on the plain path the kernel reads each edge's radial weights from
        its pair's row (an input index, like the senders): no (E, weights) copy is made."""
        n_edges = edge_index.shape[1]
        if edge_pair is None or 0 < self.edge_chunk < n_edges:
            return super().aggregate(nodes, radial_inputs, edges, edge_index, n_nodes, edge_pair)
        w = self.radial_terms(radial_inputs)[0]  # (P, tp.weight_numel)
        return self.finish([self._fused(w, nodes[0], edges[0], edge_index[0], edge_index[1],
                                        n_nodes, edge_pair)])

    def forward(self, h: Tensor, sh: Tensor, rbf: Tensor, edge_index: Tensor,
                edge_pair: Optional[Tensor] = None) -> Tensor:
        x = self.linear_in(h).index_select(1, self.x_order)  # (N, irreps_in.dim), ir_mul
        return self.aggregate([x], [rbf], [sh], edge_index, h.shape[0], edge_pair)[0]


class CueqSymmetricContraction(SymmetricContraction):
    """``SymmetricContraction`` evaluated as one cuEquivariance polynomial; shares ``weight``."""

    def __init__(self, sc: SymmetricContraction, method: str):
        RowChunked.__init__(self, sc.edge_chunk)
        self.weight, self.n_features, self.irreps_out = sc.weight, sc.n_features, sc.irreps_out
        self.n_paths, self.d_targets = sc.n_paths, sc.d_targets
        self.scalars_only = sc.scalars_only
        n = sc.n_features
        self.kernel = _kernel(contraction_polynomial(sc), method, sc.weight.dtype,
                              sc.weight.device)
        self.scalar_kernel = self.kernel  # the 0e paths alone (a last layer without vectors)
        if sc.scalar_paths.numel() > 0:
            self.scalar_kernel = _kernel(contraction_polynomial(sc, scalars_only=True), method,
                                         sc.weight.dtype, sc.weight.device)
        self.register_buffer("A_order", _ir_mul_order(sc.A_sizes, n).to(sc.weight.device),
                             persistent=False)
        # ir_mul output (component t, channel u) -> e3nn blocks (N, n (2L+1)) per target
        index, start = [], 0
        for d in sc.target_dims:
            index.extend((start + m) * n + u for u in range(n) for m in range(d))
            start += d
        self.register_buffer("out_order", torch.tensor(index, device=sc.weight.device),
                             persistent=False)
        self._register_state_dict_hook(_drop_kernel_keys)
        self.__dict__["e3nn_module"] = sc

    def rows(self, inputs: List[Tensor]) -> Tensor:
        A, species = inputs[0], inputs[1]  # (n, irreps_A.dim), (n,)
        w = self.weight.transpose(0, 1).reshape(self.weight.shape[1], -1)  # (Z, paths n)
        if self.scalars_only:  # ir_mul of the one 0e component is the channels: no reorder
            [out] = self.scalar_kernel([w, A.index_select(1, self.A_order)],
                                       input_indices={0: species})
            return out  # (n, n_features)
        [out] = self.kernel([w, A.index_select(1, self.A_order)], input_indices={0: species})
        return out.index_select(1, self.out_order)  # (n, irreps_out.dim)


_SWAPS = ((Convolution, CueqConvolution), (SymmetricContraction, CueqSymmetricContraction))

# Edges per chunk on the cuEq path when the model has the e3nn default. The fused kernel
# stores no per-edge irreps tensor (~0.36 MB per atom unchunked against e3nn's ~3.1 MB), so
# it needs chunks far later; at e3nn's 131,072-edge chunks it ran 4.2x slower than unchunked
# (MACE-style, 32k Cu atoms, H200: 202 vs 48 ms). 2^22 edges ~ 100k atoms at 42 neighbours.
CUEQ_EDGE_CHUNK = 2 ** 22


def accelerate(model: nn.Module, method: Optional[str] = None) -> nn.Module:
    """Swap the e3nn-path modules of ``model`` for cuEquivariance ones, in place.

    ``method``: cuEquivariance's ``"uniform_1d"`` (CUDA) or ``"naive"`` (anywhere); default
    ``uniform_1d`` when the model is on CUDA and the GPU kernels are installed. Call it with
    the model on its final device and dtype. Parameters stay shared; returns ``model``.
    Modules at the default edge chunk get ``CUEQ_EDGE_CHUNK`` (a chunk set by the user stays).
    """
    _cue()
    swaps = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            for e3nn_type, cueq_type in _SWAPS:
                if type(child) is e3nn_type:
                    device = next(child.parameters()).device
                    chosen = method or ("uniform_1d" if available(device) else "naive")
                    swapped = cueq_type(child, chosen)
                    if child.edge_chunk == DEFAULT_EDGE_CHUNK:
                        swapped.edge_chunk = CUEQ_EDGE_CHUNK
                    setattr(parent, name, swapped)
                    swaps += 1
    if swaps == 0 and not any(isinstance(m, (CueqConvolution, CueqSymmetricContraction))
                              for m in model.modules()):
        raise ValueError(f"kernels='cueq': {type(model).__name__} has no e3nn tensor "
                         "product to accelerate (only NequIP-style and MACE-style do)")
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undo ``accelerate`` in place (the e3nn path, e.g. before ``torch.jit.script``)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (CueqConvolution, CueqSymmetricContraction)):
                original = child.__dict__["e3nn_module"]
                if isinstance(child, CueqSymmetricContraction):
                    original.scalars_only = child.scalars_only
                else:
                    original.table = child.table
                chunk = child.edge_chunk
                original.edge_chunk = DEFAULT_EDGE_CHUNK if chunk == CUEQ_EDGE_CHUNK else chunk
                weight = next(child.parameters())  # its own constants follow later .to() calls
                setattr(parent, name, original.to(device=weight.device, dtype=weight.dtype))
    return model


def with_kernels(model: nn.Module, kernels: str, device) -> nn.Module:
    """``model`` with the ``kernels`` asked for: ``"e3nn"``, ``"cueq"`` or ``"auto"``.

    ``"auto"``: cuEquivariance when it is installed, the device is CUDA and the model has an
    e3nn tensor product; otherwise the e3nn path. ``"cueq"`` raises naming the install line
    when cuEquivariance is missing.
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if kernels == "e3nn":
        return restore(model)
    if kernels == "auto":
        swappable = tuple(e3nn_type for e3nn_type, _ in _SWAPS)
        has_tp = any(type(m) in swappable for m in model.modules())
        return accelerate(model) if has_tp and available(device) else model
    return accelerate(model)

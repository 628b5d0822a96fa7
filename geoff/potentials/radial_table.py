"""Distance-only terms read from a table instead of recomputed per edge (inference).

A filter network ``W(r)`` (SchNet: Gaussians -> MLP -> times the envelope) depends on the
distance alone, and in inference its weights are fixed. ``RadialTable`` samples it once on
an even grid of ``r`` in [r_min, cutoff] and evaluates a cubic Hermite interpolant per edge:
four table rows, a few multiply-adds, instead of the MLP and its backward pass.

Accuracy: the interpolant matches ``W`` and ``dW/dr`` at every grid point, so forces are
continuous in ``r`` (C1) and MD conserves the tabulated energy. Its error is ~h^4 |W''''| /
384 (h the spacing): SchNet's forces on 4,096 points over 5 Å agree with the networks to
~1e-8 relative in float64, and in float32 they are closer to the float64 networks than the
float32 networks are (``tests/test_radial_table.py``). Outside [r_min, r_max] the table
holds its end values.

A table is a snapshot of the weights: ``tabulate`` it after training (the calculator does,
with ``GeoffCalculator(radial_table=True)``) and again if the weights change; training mode
ignores it.

Backward pass: on the CPU autograd keeps the gathered coefficients (rows, 4 C) and reuses
them (measured faster there than gathering again); on CUDA, where (rows, 4 C) at 10^6 rows
is gigabytes, ``_Lookup`` keeps only the intervals and positions and gathers again.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

DEFAULT_POINTS = 4096


class RadialTable(nn.Module):
    """``f(r)`` (rows, C) for ``r`` (rows,) from values and derivatives on an even grid.

    ``fn``: (n,) float64 distances -> (n, C); sampled on ``n_points`` in [r_min, r_max] in
    float64, derivatives by central differences (step 1e-4 of the spacing). Each interval
    keeps its cubic in power form, ``a0 + a1 u + a2 u^2 + a3 u^3`` with ``u`` in [0, 1],
    the coefficients computed in float64 and stored in ``dtype``: in float32 the slope term
    ``a1`` then keeps float32's relative precision (differences of stored values would lose
    three digits of it to cancellation).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], r_min: float, r_max: float,
                 n_points: int = DEFAULT_POINTS, dtype=torch.float32, device=None):
        super().__init__()
        if n_points < 2 or not r_max > r_min:
            raise ValueError(f"a radial table needs n_points >= 2 and r_max > r_min, got "
                             f"{n_points}, [{r_min}, {r_max}]")
        grid = torch.linspace(r_min, r_max, n_points, dtype=torch.float64)
        h = (r_max - r_min) / (n_points - 1)
        step = 1e-4 * h
        with torch.no_grad():
            y = fn(grid)  # (n, C)
            d = h * (fn(grid + step) - fn(grid - step)) / (2 * step)  # (n, C): df/du
        y0, y1, d0, d1 = y[:-1], y[1:], d[:-1], d[1:]
        coefficients = torch.cat([y0, d0, 3 * (y1 - y0) - 2 * d0 - d1,
                                  2 * (y0 - y1) + d0 + d1], dim=1)  # (n - 1, 4 C)
        self.register_buffer("coefficients", coefficients.to(dtype=dtype, device=device),
                             persistent=False)
        self.width = int(y.shape[1])
        self.r_min = float(r_min)
        self.inv_h = 1.0 / h
        self.last = n_points - 2  # last interval

    def forward(self, r: Tensor) -> Tensor:
        # outside [r_min, r_max] the end values, held constant (SchNet's: zero beyond the
        # cutoff, where CUDA-graph padding edges sit)
        t = torch.clamp((r - self.r_min) * self.inv_h, 0.0, self.last + 1.0)  # (rows,)
        k = torch.clamp(t.detach().floor().to(torch.long), 0, self.last)  # (rows,) interval
        u = (t - k.to(t.dtype)).unsqueeze(-1)  # (rows, 1) in [0, 1]; carries d/dr
        if not torch.jit.is_scripting():
            if r.is_cuda and u.requires_grad:
                return self._regathered(u, k)
        return horner(self.coefficients, k, u, self.width)

    @torch.jit.unused
    def _regathered(self, u: Tensor, k: Tensor) -> Tensor:
        return _Lookup.apply(u, k, self.coefficients, self.width)


def horner(coefficients: Tensor, k: Tensor, u: Tensor, width: int) -> Tensor:
    """sum_n a_n u^n (rows, C) with a = coefficients[k] (rows, 4 C), u (rows, 1)."""
    a = coefficients.index_select(0, k)  # (rows, 4 C): one gather per row
    a0, a1, a2, a3 = torch.split(a, width, dim=1)
    return a0 + u * (a1 + u * (a2 + u * a3))  # (rows, C)


class _Lookup(torch.autograd.Function):
    """``horner`` whose backward gathers the coefficients again instead of keeping them:
    saves (rows,) intervals and (rows, 1) positions instead of (rows, 4 C) floats."""

    @staticmethod
    def forward(ctx, u: Tensor, k: Tensor, coefficients: Tensor, width: int) -> Tensor:
        ctx.save_for_backward(u, k, coefficients)
        ctx.width = width
        return horner(coefficients, k, u, width)

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, k, coefficients = ctx.saved_tensors
        a = coefficients.index_select(0, k)  # (rows, 4 C), transient
        _, a1, a2, a3 = torch.split(a, ctx.width, dim=1)
        slope = a1 + u * (2.0 * a2 + 3.0 * u * a3)  # (rows, C): d f / d u
        return (grad * slope).sum(dim=1, keepdim=True), None, None, None


def float64_copy(module: nn.Module) -> nn.Module:
    """A float64 copy of ``module`` on the CPU, to sample a table from wherever the model
    lives (its weights untouched)."""
    return copy.deepcopy(module).to("cpu", torch.float64)


def tabulate_radial(model: nn.Module, n_points: int = DEFAULT_POINTS) -> int:
    """Call ``tabulate(n_points)`` on every submodule of ``model`` that has one (SchNet's,
    NequIP-style's and MACE-style's representations); returns how many did. For an
    inference copy (``GeoffCalculator``)."""
    count = 0
    for module in model.modules():
        tabulate = getattr(module, "tabulate", None)
        if callable(tabulate) and module is not model:
            tabulate(n_points)
            count += 1
    return count

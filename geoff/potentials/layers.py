"""Shared building blocks: radial bases, cutoff envelopes, MLPs, the scatter sum.

Every function here is TorchScript-compatible. Distances are in Å.
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor, nn


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` (E, ...) into ``dim_size`` buckets given by ``index`` (E,)."""
    out = torch.zeros((dim_size,) + src.shape[1:], dtype=src.dtype, device=src.device)
    # contiguous(): on the CPU, index_add_ of a strided view (a slice of wider messages) takes
    # a slow path, ~70x the time of a copy plus the contiguous sum (torch 2.13, E x 128).
    return out.index_add_(0, index, src.contiguous())


class PolynomialCutoff(nn.Module):
    """Smooth envelope u(r): 1 at r=0, 0 with ``p`` vanishing derivatives... at r = cutoff.

    The polynomial of Klicpera et al. (DimeNet), exponent ``p`` (default 6): energies and
    forces go to zero smoothly at the cutoff, so MD sees no jumps when atoms cross it.
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = float(p)

    def forward(self, r: Tensor) -> Tensor:  # (E,) -> (E,)
        x = r / self.cutoff
        p = self.p
        u = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p)
            + p * (p + 2.0) * torch.pow(x, p + 1.0)
            - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2.0)
        )
        return u * (x < 1.0).to(r.dtype)


class BesselBasis(nn.Module):
    """sqrt(2/c) sin(n pi r / c) / r, n = 1..n_rbf (DimeNet); frequencies trainable."""

    def __init__(self, cutoff: float, n_rbf: int = 8, trainable: bool = False):
        super().__init__()
        self.cutoff = float(cutoff)
        freq = torch.arange(1, n_rbf + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff
        if trainable:
            self.freq = nn.Parameter(freq)
        else:
            self.register_buffer("freq", freq)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: Tensor) -> Tensor:  # (E,) -> (E, n_rbf)
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freq * r) / r


class GaussianBasis(nn.Module):
    """exp(-(r - mu_k)^2 / (2 width^2)) on an even grid of ``n_rbf`` centres in [0, cutoff]."""

    def __init__(self, cutoff: float, n_rbf: int = 32):
        super().__init__()
        centres = torch.linspace(0.0, cutoff, n_rbf, dtype=torch.get_default_dtype())
        self.register_buffer("centres", centres)
        width = cutoff / max(n_rbf - 1, 1)
        self.coeff = -0.5 / width**2

    def forward(self, r: Tensor) -> Tensor:  # (E,) -> (E, n_rbf)
        d = r.unsqueeze(-1) - self.centres
        return torch.exp(self.coeff * d * d)


class ShiftedSoftplus(nn.Module):
    """softplus(x) - log 2: smooth, zero at zero (SchNet's activation)."""

    def __init__(self):
        super().__init__()
        self.shift = math.log(2.0)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(x) - self.shift


def activation(name: str) -> nn.Module:
    """Smooth activations only: forces are derivatives, and MD needs them continuous."""
    table = {"silu": nn.SiLU, "ssp": ShiftedSoftplus, "tanh": nn.Tanh}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(table)}")
    return table[name]()


def mlp(sizes: List[int], act: str = "silu", bias_last: bool = True) -> nn.Sequential:
    """Linear layers of the given widths with ``act`` between them (none after the last)."""
    layers: List[nn.Module] = []
    for k in range(len(sizes) - 1):
        last = k == len(sizes) - 2
        layers.append(nn.Linear(sizes[k], sizes[k + 1], bias=bias_last or not last))
        if not last:
            layers.append(activation(act))
    return nn.Sequential(*layers)


def legendre_polynomials(x: Tensor, l_max: int) -> Tensor:
    """P_0(x) .. P_lmax(x) by Bonnet's recursion (stable for |x| <= 1): (T,) -> (T, l_max + 1).

    Polynomials of cos(theta) are angular bases without arccos, whose derivative is singular at
    theta = 0 and pi; sqrt((2l + 1) / 4 pi) P_l(cos theta) is the spherical harmonic Y_l^0.
    """
    p = [torch.ones_like(x)]
    if l_max >= 1:
        p.append(x)
    for l in range(2, l_max + 1):
        p.append(((2 * l - 1) * x * p[l - 1] - (l - 1) * p[l - 2]) / l)
    return torch.stack(p, dim=-1)  # (T, l_max + 1)

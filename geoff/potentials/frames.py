"""Frames for unconstrained networks: PCA frames (global and per-atom local) and sampled O(3).

A *frame* here is a 3x3 orthogonal matrix ``F`` whose **columns** are the axes, in Cartesian
components. A Cartesian vector ``r`` is expressed in the frame as ``F^T r`` and a vector ``v'``
predicted in the frame goes back to Cartesian as ``F v'``. If a frame is *equivariant*,
``F(R x) = R F(x)``, then ``F^T r`` is invariant and ``F v'`` rotates with the structure, so any
network fed with ``F^T r`` becomes invariant (scalars) / equivariant (vectors).

PCA frames (Puny et al. 2022, "Frame averaging"; Duval et al. 2023, FAENet)
---------------------------------------------------------------------------
The eigenvectors ``V`` of a covariance ``C(R x) = R C(x) R^T`` rotate with the structure, but
only up to the sign of each eigenvector. Averaging a function over all sign choices
``V diag(s)`` is an exact average over that finite set, hence invariant:

* ``group="O3"``: the 8 choices ``s in {+-1}^3`` (rotations *and* reflections);
* ``group="SO3"``: the 4 choices with ``det(V diag(s)) = +1`` (rotations only; a reflected
  structure gets the other 4, so the average is not reflection invariant).

Two covariances are provided:

* ``structure_covariance``: of the centred positions of each structure in a batch
  (FAENet's *global* frame). It is not local: one frame per structure, so no MPI domain
  decomposition, no extensivity, and the frame jumps when atoms wrap through a periodic
  boundary (the positions change, the crystal does not).
* ``neighbour_covariance``: ``C_i = sum_j w(r_ij) r_ij r_ij^T`` over the edges of atom ``i``,
  ``w`` the smooth ``PolynomialCutoff`` envelope, so ``C_i`` changes smoothly as neighbours
  cross the cutoff. A frame per atom, from the same neighbours one message-passing layer sees:
  the model stays local (periodic systems, LAMMPS ghosts) with an unchanged receptive field.

Degenerate eigenvalues (the honest part)
----------------------------------------
Where two eigenvalues coincide the eigenvectors of that pair are *not defined* (any rotation
inside their plane is as good), and ``d V / d C`` ~ 1/(lambda_a - lambda_b) blows up; the
backward of ``torch.linalg.eigh`` then returns inf or NaN (0/0 when the incoming gradient is
zero). This is not rare: a perfect FCC, BCC or SC site has an *isotropic* neighbour covariance
(all three equal), a thermal crystal is close to it (relative gaps ~0.006 at 0.05 Å rattle in
FCC Cu, cutoff 5 Å), and symmetric molecules have two equal eigenvalues. We do three things:

1. ``stable_eigh``: the forward is the exact ``eigh``; the derivative is written as
   first-order perturbation theory in ordinary tensor operations (so TorchScript can script
   it), with the gap ``1/d`` replaced by ``d / (d^2 + eps^2)``, ``eps = rel_eps * trace(C)``
   (Lorentzian broadening). For gaps >> eps it is the exact derivative (relative error
   (eps/d)^2); at an exact degeneracy it is finite (0 for the degenerate pair). Forces are
   therefore never NaN. Second derivatives with respect to positions are *not* those of the
   eigenvectors (the surrogate is linear in C); derivatives with respect to network
   parameters of the forces (force-matching training) are exact, because frames do not
   depend on parameters.
2. ``gap_gates``: a per-axis smooth gate ``g_a in [0, 1)`` that multiplies the frame
   coordinates of every vector fed to the network. With the relative gaps
   ``t_1 = (lambda_2 - lambda_1) / tr C`` and ``t_2 = (lambda_3 - lambda_2) / tr C`` and
   ``s(t) = 1 - exp(-(t / gap_scale)^2)``: ``g_1 = s(t_1)``, ``g_2 = s(t_1) s(t_2)``,
   ``g_3 = s(t_2)``. Axis ``a`` is gated by the gaps that make it well defined, so an axially
   symmetric environment keeps its unique axis. Since ``s ~ t^2``, the gated coordinate and
   its derivative both go to zero at a degeneracy (``s / t -> 0``): the energy is
   continuous *and* C^1 through degeneracies and eigenvalue crossings, and the force
   amplification of a near-degenerate frame is bounded by about ``0.64 / gap_scale`` (in
   units of 1/tr C) instead of growing like 1/gap. The price: where the environment is
   (nearly) isotropic the network sees (almost) only distances. ``gap_scale=0`` switches the
   gates off (plain PCA frames, as in FAENet): still no NaN (item 1), but the energy is then
   discontinuous at degeneracies and crossings, and on a perfect lattice the frame is
   whatever the eigensolver returns for an isotropic matrix, so invariance is lost there
   (measured in ``tests/test_frames.py`` and ``benchmarks/symmetry.py``).
3. The sign average of a vector predicted in the frame and rotated back cancels its
   frame-independent part (``sum_s diag(s) = 0`` for both sign sets), so direct-force vectors
   are continuous too.

Measured (``benchmarks/results/symmetry.md``, untrained default-size faenet, perfect FCC Cu
32-atom cell): gated local and global frames give energies invariant to 1e-16 (float64) and
forces of 1e-15 eV/Å (zero by symmetry). Plain PCA frames (``gap_scale=0``) give finite but
spurious forces (up to 2e-4 eV/Å in float64, 3e-3 to 8e-3 in float32, where rounding picks the
frame), a rotation changes the energy by ~1e-7 relative, and the energy jumps at the lattice
point (``tests/test_frames.py``). On a rattled cell the gates also protect float32: the force
equivariance error of local frames is 2e-5 relative with gates, 2e-3 without.

Sampled transforms
------------------
``random_orthogonal`` draws Haar-random elements of O(3) (QR of a Gaussian matrix with the
sign of diag(R) fixed, Mezzadri 2007) or of SO(3) (one column flipped where det = -1).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .layers import scatter_sum

GROUPS = ("O3", "SO3")


def sign_choices(group: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Sign patterns of the PCA frames: (8, 3) for ``"O3"``, the 4 with product +1 for
    ``"SO3"`` (they keep det(V diag(s)) = det(V))."""
    if group not in ("O3", "SO3"):
        raise ValueError("group must be 'O3' or 'SO3', got " + group)
    rows: List[List[float]] = []
    for a in (1.0, -1.0):
        for b in (1.0, -1.0):
            for c in (1.0, -1.0):
                if group == "O3" or a * b * c > 0:
                    rows.append([a, b, c])
    return torch.tensor(rows, dtype=dtype, device=device)  # (K, 3)


def structure_covariance(positions: Tensor, batch: Tensor, n_graphs: int) -> Tensor:
    """Covariance of the centred positions of each structure: (N, 3) -> (B, 3, 3), Å^2."""
    ones = torch.ones(positions.shape[0], dtype=positions.dtype, device=positions.device)
    count = scatter_sum(ones, batch, n_graphs).clamp(min=1.0)  # (B,)
    centre = scatter_sum(positions, batch, n_graphs) / count.unsqueeze(-1)  # (B, 3)
    x = positions - centre[batch]  # (N, 3)
    outer = x.unsqueeze(-1) * x.unsqueeze(-2)  # (N, 3, 3)
    return scatter_sum(outer, batch, n_graphs) / count.view(-1, 1, 1)  # (B, 3, 3)


def neighbour_covariance(edge_vec: Tensor, receivers: Tensor, weights: Tensor,
                         n_atoms: int) -> Tensor:
    """C_i = sum_j w_ij r_ij r_ij^T over the edges of each receiver: -> (N, 3, 3), Å^2."""
    outer = edge_vec.unsqueeze(-1) * edge_vec.unsqueeze(-2)  # (E, 3, 3)
    return scatter_sum(weights.view(-1, 1, 1) * outer, receivers, n_atoms)  # (N, 3, 3)


def stable_eigh(cov: Tensor, rel_eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Eigenvalues (M, 3) ascending and eigenvectors (M, 3, 3) (columns) of symmetric (M, 3, 3).

    Values are exactly those of ``torch.linalg.eigh``; the derivative is first-order
    perturbation theory with broadened gaps ``d / (d^2 + eps^2)``, ``eps = rel_eps * tr C``
    (see the module docstring): finite at degeneracies, exact elsewhere up to (eps/d)^2.
    """
    c0 = cov.detach()
    evals0, evecs0 = torch.linalg.eigh(c0)  # (M, 3), (M, 3, 3)
    # Zero-valued, but carries d/dC: the forward pass below returns exactly evals0, evecs0.
    delta = cov - c0  # (M, 3, 3)
    a = evecs0.transpose(-1, -2) @ delta @ evecs0  # (M, 3, 3), V0^T dC V0
    trace = c0.diagonal(dim1=-2, dim2=-1).sum(-1).abs()  # (M,)
    # The 1e-15 Å^2 floor keeps 0/0 away from atoms without neighbours (its square is still a
    # normal float32; TorchScript has no torch.finfo).
    eps = rel_eps * trace + 1e-15  # (M,)
    gap = evals0.unsqueeze(-2) - evals0.unsqueeze(-1)  # (M, 3, 3): gap[a, b] = l_b - l_a
    inv_gap = gap / (gap * gap + (eps * eps).view(-1, 1, 1))  # 0 on the diagonal
    # dv_b = sum_{a != b} v_a (v_a^T dC v_b) / (l_b - l_a);  dl_b = v_b^T dC v_b.
    evecs = evecs0 + evecs0 @ (a * inv_gap)  # (M, 3, 3)
    evals = evals0 + a.diagonal(dim1=-2, dim2=-1)  # (M, 3)
    return evals, evecs


def gap_gates(evals: Tensor, gap_scale: float) -> Tensor:
    """Per-axis gates (M, 3) in [0, 1) from ascending eigenvalues (M, 3); ones if gap_scale=0.

    g_1 = s(t_1), g_2 = s(t_1) s(t_2), g_3 = s(t_2), t_a the gaps relative to the trace and
    s(t) = 1 - exp(-(t / gap_scale)^2): s ~ t^2 near a degeneracy (see module docstring).
    """
    if gap_scale <= 0.0:
        return torch.ones_like(evals)
    trace = evals.sum(-1, keepdim=True).abs() + 1e-30  # (M, 1); floor for atoms alone
    t = (evals[:, 1:] - evals[:, :-1]) / trace  # (M, 2), >= 0
    s = 1.0 - torch.exp(-(t / gap_scale) ** 2)  # (M, 2)
    return torch.stack([s[:, 0], s[:, 0] * s[:, 1], s[:, 1]], dim=-1)  # (M, 3)


def pca_frames(cov: Tensor, group: str = "O3", gap_scale: float = 0.0,
               rel_eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """All PCA frames of each covariance and their per-axis gates.

    (M, 3, 3) -> frames (M, K, 3, 3) (K = 8 for O3, 4 for SO3; columns are axes, ascending
    eigenvalue), gates (M, 3). For SO3 every frame is proper (det = +1).
    """
    evals, evecs = stable_eigh(cov, rel_eps)  # (M, 3), (M, 3, 3)
    if group == "SO3":
        # Multiply all three columns by det(V) = +-1: det(-V) = -det(V) in 3D, so V is proper.
        det = torch.linalg.det(evecs.detach())  # (M,)
        evecs = evecs * torch.sign(det).view(-1, 1, 1)
    signs = sign_choices(group, cov.dtype, cov.device)  # (K, 3)
    frames = evecs.unsqueeze(1) * signs.view(1, -1, 1, 3)  # (M, K, 3, 3): column a times s_a
    return frames, gap_gates(evals, gap_scale)


def pick_frames(frames: Tensor, n_pick: int) -> Tensor:
    """``n_pick`` frames drawn uniformly (with replacement) per row, from torch's global RNG:
    (M, K, 3, 3) -> (M, n_pick, 3, 3). Stochastic frame averaging draws these in training."""
    m, k = frames.shape[0], frames.shape[1]
    idx = torch.randint(0, k, (m, n_pick), device=frames.device)  # (M, n_pick)
    rows = torch.arange(m, device=frames.device).unsqueeze(-1).expand(m, n_pick)
    return frames[rows, idx]  # (M, n_pick, 3, 3)


def random_orthogonal(n: int, group: str, dtype: torch.dtype, device: torch.device,
                      generator: Optional[torch.Generator] = None) -> Tensor:
    """``n`` Haar-random orthogonal matrices (n, 3, 3): O(3) (half of them reflections) or
    SO(3). Uses ``generator`` if given (seeded, reproducible), else torch's global RNG."""
    if group not in ("O3", "SO3"):
        raise ValueError("group must be 'O3' or 'SO3', got " + group)
    # QR in float64 so that float32 models still get orthogonal matrices to rounding.
    gauss = torch.randn((n, 3, 3), dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(gauss)  # (n, 3, 3) each
    # Fixing the sign of diag(R) makes Q Haar-distributed on O(3) (Mezzadri 2007).
    q = q * torch.sign(r.diagonal(dim1=-2, dim2=-1)).unsqueeze(-2)
    if group == "SO3":
        det = torch.sign(torch.linalg.det(q))  # (n,)
        flip = torch.ones((n, 3), dtype=q.dtype)
        flip[:, 0] = det
        q = q * flip.unsqueeze(-2)  # flips the first column where det = -1
    return q.to(dtype=dtype, device=device)

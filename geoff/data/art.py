"""ART-nouveau-style activation on any force function: push, climb, check, relax.

The potential is a callable ``potential(x) -> (energy, forces)`` on flat positions ``x``
(3N,) in Å, returning eV and (3N,) eV/Å; ``displacement(a, b)`` gives ``a - b`` (3N,)
(minimum image for a periodic cell). Curvatures come from forces only: Hessian-vector
products are forward differences ``H v = -(F(x + h v) - F(x)) / h`` (one force call each)
and the lowest curvature (eV/Å²) is the lowest Ritz value of a few Lanczos iterations.

One event from a minimum ``x0`` (energy ``E0``) and a region (an atom and its first shell):

1. *activation*: push the region in increments of ``push_step`` Å along a random unit
   direction ``d`` (region only); after each increment, relax the forces perpendicular to
   ``d`` (every atom, ``perp_steps`` steepest-descent steps). From the ``min_push``-th
   increment on, estimate the lowest curvature; stop pushing once it is below
   ``eig_threshold`` (we have left the harmonic basin).
2. *convergence*: FIRE on the min-mode force ``F - 2 (F.v) v`` (uphill along the lowest mode
   ``v``, downhill in the others), ``v`` refreshed by a warm-started Lanczos each step, until
   every atom's force is below ``fmax`` eV/Å.
3. *check*: the lowest curvature below ``-curvature_tol`` and the lowest one orthogonal to it
   (a deflated Lanczos) above ``-curvature_tol``: a first-order saddle.
4. *relax*: step ``exit_step`` Å off the saddle along ``v``, away from ``x0``, and minimise;
   if that falls back into ``x0``, the saddle joins ``x0`` to the minimum on the other side:
   relax that side instead.

``activate`` returns an ``Event``; the caller decides whether it is centred on its atom.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

Potential = Callable[[np.ndarray], Tuple[float, np.ndarray]]


@dataclass
class ArtSettings:
    """Lengths in Å, forces in eV/Å, curvatures in eV/Å²."""

    push_step: float = 0.1  # norm of one activation increment (region only)
    max_push: int = 30  # increments before giving up ("no_negative_curvature")
    min_push: int = 3  # increments before the first curvature estimate
    perp_steps: int = 2  # perpendicular relaxation steps per increment
    perp_alpha: float = 0.04  # Å²/eV: steepest-descent step factor
    max_move: float = 0.1  # largest per-atom move of one relaxation step
    eig_threshold: float = -0.3  # leave activation once the lowest curvature is below this
    lanczos_iters: int = 12  # cold-start Lanczos (activation)
    lanczos_warm: int = 5  # warm-start Lanczos (convergence)
    lanczos_tol: float = 0.01  # stop Lanczos once the lowest Ritz value moves less than this
    max_recover: int = 8  # successive pushes allowed when the curvature turns positive while converging
    fd_step: float = 1e-3  # finite-difference step of Hessian-vector products
    fmax: float = 0.05  # saddle convergence: every atom's |F| below this, and
    max_newton: float = 0.05  # the Newton step along the lowest mode |F.v|/|lambda| below this
    max_converge: int = 150  # FIRE steps towards the saddle ("not_converged")
    curvature_tol: float = 0.01  # first order: lowest < -tol, second-lowest > -tol
    check_iters: int = 20  # deflated Lanczos for the second-lowest curvature
    exit_step: float = 0.15  # off the saddle before relaxing into the next minimum
    min_event_displacement: float = 0.1  # final minimum differs: some atom moved this much


@dataclass
class Event:
    """One activation attempt. ``status``: ``accepted`` or why not (see ``activate``)."""

    status: str
    barrier: float = float("nan")  # E_saddle - E0, eV
    curvature: float = float("nan")  # lowest curvature at the saddle, eV/Å²
    second_curvature: float = float("nan")  # lowest one orthogonal to it
    max_force: float = float("nan")  # at the saddle, eV/Å
    saddle_displacement: Optional[np.ndarray] = None  # (N,) |x_saddle - x0| per atom, Å
    final_displacement: float = float("nan")  # max over atoms of |x_final - x0|, Å
    final_energy_change: float = float("nan")  # E_final - E0, eV
    force_calls: int = 0
    push_steps: int = 0
    converge_steps: int = 0
    extra: dict = field(default_factory=dict)


class Counted:
    """A potential that counts its calls."""

    def __init__(self, potential: Potential):
        self.potential, self.calls = potential, 0

    def __call__(self, x):
        self.calls += 1
        return self.potential(x)


def lanczos_lowest(hv: Callable[[np.ndarray], np.ndarray], start: np.ndarray, iters: int,
                   tol: float = 1e-3) -> Tuple[float, np.ndarray]:
    """Lowest Ritz pair ``(value, unit vector)`` of the operator ``hv`` from ``start``:
    at most ``iters`` Lanczos steps (full reorthogonalisation), stopping once the value
    changes by less than ``tol``."""
    basis = [start / np.linalg.norm(start)]
    alphas, betas = [], []
    value, previous = np.inf, np.inf
    y = np.ones(1)
    for j in range(iters):
        w = hv(basis[j])
        alphas.append(float(basis[j] @ w))
        for q in basis:  # full reorthogonalisation (small bases; keeps Ritz values honest)
            w = w - (q @ w) * q
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        vals, vecs = np.linalg.eigh(t)
        value, y = float(vals[0]), vecs[:, 0]
        beta = float(np.linalg.norm(w))
        if (j >= 2 and abs(value - previous) < tol) or beta < 1e-10 or j == iters - 1:
            break
        previous = value
        betas.append(beta)
        basis.append(w / beta)
    vector = np.asarray(basis[: len(y)]).T @ y
    return value, vector / np.linalg.norm(vector)


def hessian_product(potential: Potential, x: np.ndarray, forces: np.ndarray, step: float,
                    project: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None):
    """``v -> H v`` at ``x`` (forward differences of forces, one call each); with
    ``project`` (a unit vector u), the deflated ``(1 - u u^T) H (1 - u u^T)``; with ``mask``
    (3N,) of 0/1, the block of H on the masked coordinates (a local region)."""

    def hv(v):
        if mask is not None:
            v = v * mask
        if project is not None:
            v = v - (project @ v) * project
        out = -(potential(x + step * v)[1] - forces) / step
        if mask is not None:
            out = out * mask
        if project is not None:
            out = out - (project @ out) * project
        return out

    return hv


def _capped(step: np.ndarray, max_move: float) -> np.ndarray:
    """``step`` (3N,) scaled so no atom moves more than ``max_move`` Å."""
    largest = float(np.linalg.norm(step.reshape(-1, 3), axis=1).max())
    return step * (max_move / largest) if largest > max_move else step


def _fmax(forces: np.ndarray) -> float:
    return float(np.linalg.norm(forces.reshape(-1, 3), axis=1).max())


def _increment(potential, x, direction, s: ArtSettings):
    """One push of ``push_step`` Å along ``direction``, then the perpendicular relaxation."""
    x = x + s.push_step * direction
    energy, forces = potential(x)
    for _ in range(s.perp_steps):
        perp = forces - (forces @ direction) * direction
        x = x + _capped(s.perp_alpha * perp, s.max_move)
        energy, forces = potential(x)
    return x, energy, forces


def _push(potential, x, forces, direction, s: ArtSettings, event: Event, mask):
    """Activation; returns ``(x, energy, forces, lowest curvature, its mode)`` or None."""
    mode = direction
    for k in range(s.max_push):
        x, energy, forces = _increment(potential, x, direction, s)
        event.push_steps = k + 1
        if k + 1 >= s.min_push:
            hv = hessian_product(potential, x, forces, s.fd_step, mask=mask)
            value, mode = lanczos_lowest(hv, mode, s.lanczos_iters, s.lanczos_tol)
            if value < s.eig_threshold:
                return x, energy, forces, value, mode
    return None


def _converge(potential, x0, x, energy, forces, value, mode, s: ArtSettings, event: Event,
              mask):
    """FIRE on the min-mode force; returns ``(x, energy, forces, value, mode)`` or None."""
    velocity, dt, alpha, n_positive, lost = np.zeros_like(x), 0.1, 0.1, 0, 0
    for k in range(s.max_converge):
        event.converge_steps = k
        # Converged: small forces, and the saddle along the mode (a Newton step away) is
        # near too; on a shallow mode a force of fmax can still leave it far away.
        if value < 0 and _fmax(forces) < s.fmax and \
                abs(forces @ mode) < s.max_newton * abs(value):
            return x, energy, forces, value, mode
        lost = lost + 1 if value >= 0 else 0
        if value >= 0:  # back in a basin: push on away from x0, as in the activation
            if lost > s.max_recover:
                event.extra["converge_exit"] = "lost_curvature"
                return None
            uphill = mode if mode @ (x - x0) >= 0 else -mode  # away from x0 along the mode
            x, energy, forces = _increment(potential, x, uphill, s)
            hv = hessian_product(potential, x, forces, s.fd_step, mask=mask)
            value, mode = lanczos_lowest(hv, mode, s.lanczos_iters, s.lanczos_tol)
            velocity[:] = 0.0
            continue
        drive = forces - 2.0 * (forces @ mode) * mode
        power = float(velocity @ drive)
        if power > 0:
            norm_d = np.linalg.norm(drive)
            velocity = (1 - alpha) * velocity + alpha * np.linalg.norm(velocity) * drive / norm_d
            n_positive += 1
            if n_positive > 5:
                dt, alpha = min(1.1 * dt, 0.5), 0.99 * alpha
        else:
            velocity[:], dt, alpha, n_positive = 0.0, 0.5 * dt, 0.1, 0
        velocity = velocity + dt * drive
        x = x + _capped(dt * velocity, s.max_move)
        energy, forces = potential(x)
        hv = hessian_product(potential, x, forces, s.fd_step, mask=mask)
        value, mode = lanczos_lowest(hv, mode, s.lanczos_warm, s.lanczos_tol)
    event.extra["converge_exit"] = "max_converge"
    return None


def activate(potential: Potential, x0: np.ndarray, e0: float, region: Sequence[int],
             rng: np.random.Generator, settings: Optional[ArtSettings] = None,
             relax: Optional[Callable[[np.ndarray], Tuple[np.ndarray, float]]] = None,
             displacement: Optional[Callable] = None,
             local: Optional[Sequence[int]] = None) -> Event:
    """One attempt from the minimum ``x0`` (3N,) of energy ``e0`` (eV).

    ``region``: atom indices pushed at activation. ``local``: atoms whose Hessian block gives
    the curvatures (default all): it keeps the lowest mode on the event, not on a soft spot
    elsewhere in the cell. ``relax(x) -> (x_min, e_min)`` minimises
    (default: FIRE here). ``displacement(a, b)``: ``a - b`` (default plain difference).
    Statuses: ``accepted``; ``no_negative_curvature`` (activation ran out of increments);
    ``not_converged``; ``not_first_order``; ``no_barrier`` (saddle not above ``e0``);
    ``no_event`` (relaxed back to ``x0``).
    """
    s = settings or ArtSettings()
    counted = Counted(potential)
    displacement = displacement or np.subtract
    relax = relax or (lambda x: fire_relax(counted, x, s.fmax / 5))
    event = Event("no_negative_curvature")
    direction = np.zeros_like(x0).reshape(-1, 3)
    direction[list(region)] = rng.normal(size=(len(region), 3))
    direction = direction.ravel() / np.linalg.norm(direction)
    mask = None
    if local is not None:
        mask = np.zeros_like(x0).reshape(-1, 3)
        mask[list(local)] = 1.0
        mask = mask.ravel()
    _, f0 = counted(x0)
    pushed = _push(counted, x0, f0, direction, s, event, mask)
    if pushed is not None:
        event.status = "not_converged"
        found = _converge(counted, x0, *pushed, s, event, mask)
        if found is not None:
            _finish(counted, x0, e0, found, s, event, relax, displacement, mask)
    event.force_calls = counted.calls
    return event


def _finish(potential, x0, e0, found, s: ArtSettings, event: Event, relax, displacement,
            mask):
    """Check the saddle, relax off it, and set the event's status."""
    x, energy, forces, value, mode = found
    # The convergence's warm Lanczos is loose (lanczos_tol): refine the lowest pair first.
    value, mode = lanczos_lowest(hessian_product(potential, x, forces, s.fd_step, mask=mask),
                                 mode, s.check_iters, tol=1e-4)
    hv = hessian_product(potential, x, forces, s.fd_step, project=mode, mask=mask)
    start = np.random.default_rng(0).normal(size=x.size) * (1.0 if mask is None else mask)
    second, _ = lanczos_lowest(hv, start - (mode @ start) * mode, s.check_iters, tol=1e-4)
    moved = displacement(x, x0)
    event.barrier, event.curvature, event.second_curvature = energy - e0, value, second
    event.max_force = _fmax(forces)
    event.saddle_displacement = np.linalg.norm(moved.reshape(-1, 3), axis=1)
    if not (value < -s.curvature_tol and second > -s.curvature_tol):
        event.status = "not_first_order"
        return
    if event.barrier <= 0:
        event.status = "no_barrier"
        return
    sign = 1.0 if mode @ moved >= 0 else -1.0
    for side in (sign, -sign):  # away from x0 first; if that falls back to x0, the other side
        final, e_final = relax(x + side * s.exit_step * mode)
        event.final_displacement = float(np.linalg.norm(
            displacement(final, x0).reshape(-1, 3), axis=1).max())
        event.final_energy_change = e_final - e0
        event.extra.setdefault("sides", []).append(
            (event.final_displacement, event.final_energy_change))
        if event.final_displacement > s.min_event_displacement:
            event.status = "accepted"
            return
    event.status = "no_event"


def fire_relax(potential: Potential, x: np.ndarray, fmax: float, steps: int = 2000,
               max_move: float = 0.1) -> Tuple[np.ndarray, float]:
    """FIRE minimisation (ASE's parameters, unit masses) to ``fmax`` eV/Å; ``(x, energy)``."""
    velocity, dt, alpha, n_positive = np.zeros_like(x), 0.1, 0.1, 0
    energy, forces = potential(x)
    for _ in range(steps):
        if _fmax(forces) < fmax:
            break
        power = float(velocity @ forces)
        if power > 0:
            velocity = ((1 - alpha) * velocity
                        + alpha * np.linalg.norm(velocity) * forces / np.linalg.norm(forces))
            n_positive += 1
            if n_positive > 5:
                dt, alpha = min(1.1 * dt, 1.0), 0.99 * alpha
        else:
            velocity[:], dt, alpha, n_positive = 0.0, 0.5 * dt, 0.1, 0
        velocity = velocity + dt * forces
        x = x + _capped(dt * velocity, max_move)
        energy, forces = potential(x)
    return x, energy

"""Activation events on any ASE calculator (a single push, then ASE's dimer), and the helpers
the barrier generator shares: ``first_shell``, ``centred``, ``barrier_labels``.

``cuzr-barriers`` no longer uses ``search_event``: from a 0.4 Å push the dimer accepted 0 of
16 attempts on a 100-atom glass (it started in the positive-curvature basin). The generator
uses ``geoff.data.art`` (incremental ART-style activation with Lanczos curvatures) instead;
``search_event`` stays as the ASE-only variant for any calculator (and its tests).

One event from a relaxed structure ``minimum`` (energy ``E0``) and a region (an atom and its
first shell):

1. *push*: displace the region along a random unit direction (norm ``push`` Å, the rest of
   the structure fixed), the direction also the dimer's initial mode;
2. *climb*: ASE's dimer method (``ase.mep.dimer``: rotate the dimer to the lowest curvature
   mode, translate up along it and down along the others) to a point where every force
   component is below ``fmax`` (eV/Å);
3. *check*: a finite-difference Hessian on the atoms that moved most between minimum and
   saddle (central differences of forces, step ``hessian_step`` Å): exactly one eigenvalue
   below ``-curvature_tol`` (eV/Å²) makes a first-order saddle;
4. *relax*: step off the saddle along the unstable mode, away from the starting minimum, and
   FIRE-relax into the next minimum.

The barrier is ``E_saddle - E0`` (eV). ``EventResult`` records every step's outcome, so
callers can count attempts that did not converge, were not first-order, or fell back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


@dataclass
class EventResult:
    """One activation attempt. ``status``: ``"accepted"`` or why not (see ``search_event``)."""

    status: str
    barrier: float = float("nan")  # eV
    n_negative: int = -1  # negative Hessian eigenvalues on the moving region
    curvature: float = float("nan")  # lowest eigenvalue there, eV/Å²
    max_force: float = float("nan")  # at the saddle, eV/Å
    most_displaced: int = -1  # atom moving most from minimum to saddle
    final_displacement: float = float("nan")  # max |x_final - x_0| over atoms, Å
    steps: int = 0  # dimer translation steps + relaxation steps
    extra: dict = field(default_factory=dict)


def region_hessian(atoms, indices: Sequence[int], step: float = 0.01) -> np.ndarray:
    """Symmetrised Hessian (3m, 3m) in eV/Å² of ``atoms``' energy w.r.t. the given atoms,
    by central differences of the forces (2 * 3m force calls)."""
    indices = list(indices)
    x0 = atoms.get_positions()
    columns = []
    for a in indices:
        for c in range(3):
            f = []
            for sign in (1.0, -1.0):
                x = x0.copy()
                x[a, c] += sign * step
                atoms.set_positions(x)
                f.append(atoms.get_forces()[indices].reshape(-1))
            columns.append(-(f[0] - f[1]) / (2 * step))
    atoms.set_positions(x0)
    h = np.array(columns)
    return 0.5 * (h + h.T)


def check_saddle(atoms, indices: Sequence[int], fmax: float, step: float = 0.01,
                 curvature_tol: float = 0.01):
    """``(is_first_order, n_negative, lowest_eigenvalue, max_force)`` at ``atoms``' positions.

    First order: max force below ``fmax`` (eV/Å) and exactly one eigenvalue of the region's
    Hessian below ``-curvature_tol`` (eV/Å²).
    """
    max_force = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    eig = np.linalg.eigvalsh(region_hessian(atoms, indices, step))
    n_negative = int((eig < -curvature_tol).sum())
    return (max_force < fmax and n_negative == 1), n_negative, float(eig[0]), max_force


# ASE dimer settings: up to 4 rotations per translation and longer translation steps than
# ASE's defaults (0.001 / 0.1 Å), which on the glass took > 300 steps without converging.
DIMER = dict(max_num_rot=4, trial_trans_step=0.05, maximum_translation=0.2)


def search_event(minimum, region: Sequence[int], rng: np.random.Generator, push: float = 0.4,
                 fmax: float = 0.03, max_dimer_steps: int = 200, max_relax_steps: int = 500,
                 hessian_atoms: int = 8, min_event_displacement: float = 0.1) -> EventResult:
    """One activation attempt from ``minimum`` (Atoms with a calculator, relaxed).

    Statuses: ``accepted``; ``not_converged`` (dimer hit ``max_dimer_steps``);
    ``not_first_order`` (Hessian check failed); ``no_event`` (relaxed back to the start).
    """
    from ase.mep.dimer import DimerControl, MinModeAtoms, MinModeTranslate
    from ase.optimize import FIRE

    calc = minimum.calc
    e0 = minimum.get_potential_energy()
    x0 = minimum.get_positions()
    atoms = minimum.copy()
    atoms.calc = calc
    region = list(region)
    direction = np.zeros_like(x0)
    direction[region] = rng.normal(size=(len(region), 3))
    direction /= np.linalg.norm(direction)
    # The push moves only the region; the dimer then moves every atom.
    control = DimerControl(initial_eigenmode_method="displacement", displacement_method="vector",
                           logfile=None, **DIMER)
    dimer_atoms = MinModeAtoms(atoms, control)
    dimer_atoms.displace(displacement_vector=push * direction, mask=[True] * len(atoms))
    climb = MinModeTranslate(dimer_atoms, trajectory=None, logfile=None)
    converged = bool(climb.run(fmax=fmax, steps=max_dimer_steps))
    steps = climb.nsteps
    if not converged:
        return EventResult("not_converged", steps=steps)
    saddle = atoms.get_positions()
    e_saddle = atoms.get_potential_energy()
    moved = np.linalg.norm(saddle - x0, axis=1)
    top = [int(k) for k in np.argsort(-moved)[:hessian_atoms]]
    ok, n_neg, lowest, f_saddle = check_saddle(atoms, top, fmax * 1.5)
    result = EventResult("not_first_order", barrier=float(e_saddle - e0), n_negative=n_neg,
                         curvature=lowest, max_force=f_saddle, most_displaced=top[0],
                         steps=steps)
    if not ok:
        return result
    # Off the saddle, away from the start (the most displaced atom moves 0.1 Å further).
    atoms.set_positions(saddle + 0.1 * (saddle - x0) / max(float(moved.max()), 1e-12))
    relax = FIRE(atoms, logfile=None)
    relax.run(fmax=fmax, steps=max_relax_steps)
    result.steps += relax.nsteps
    final = atoms.get_positions()
    result.final_displacement = float(np.linalg.norm(final - x0, axis=1).max())
    result.extra["final_energy_change"] = float(atoms.get_potential_energy() - e0)
    result.status = ("accepted" if result.final_displacement > min_event_displacement
                     else "no_event")
    return result


def barrier_labels(barriers: Sequence[float]) -> tuple:
    """``(mean, min)`` of the accepted barriers (eV), NaN for none."""
    values = np.asarray([b for b in barriers if np.isfinite(b)], dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.min())


def first_shell(atoms, index: int, radius: float) -> list:
    """``index`` and the atoms within ``radius`` Å of it (minimum image)."""
    d = atoms.get_distances(index, list(range(len(atoms))), mic=True)
    return [index] + [int(k) for k in np.flatnonzero((d < radius) & (d > 0))]


def centred(atoms, index: int, most_displaced: Optional[int], radius: float) -> bool:
    """Whether the atom moving most in an event is ``index`` or in its first shell."""
    if most_displaced is None or most_displaced < 0:
        return False
    if most_displaced == index:
        return True
    return bool(atoms.get_distance(index, most_displaced, mic=True) < radius)

"""The geometric failure checks of R replicas at once: which replicas may fail the distance or
bond criteria of their ``FailureMonitor`` at a check step.

``FailureMonitor.check`` builds neighbour lists (matscipy) replica by replica; for the small
systems replicas are for, all pair distances of all replicas at once (R, N, N) cost less than
one Python call per replica. ``GeometryScreen.flag(positions)`` returns the replicas for which
any criterion is within ``slack`` of failing; only those then go through their monitor, which
decides exactly as in a single run (so the screen may flag too many, never too few).

Applies to molecules (no periodic direction) and fully periodic orthorhombic cells (minimum
image: exact when the thresholds are below half the box, which ``applies`` checks); other cells
return None from ``GeometryScreen.build`` and the replicas go through their monitors.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .failure import FailureMonitor

#: how close to a threshold (Å) a distance must come to be flagged (rounding margin)
SLACK = 1e-6
#: replicas per block of the (block, N, N) distance arrays (memory)
BLOCK = 16


class GeometryScreen:
    """All-pairs screen of the distance and bond criteria of ``monitor`` (one per system:
    replicas share species, cell and criteria; the starting bond topology is replica 0's)."""

    def __init__(self, monitor: FailureMonitor, atoms, monitors=None):
        self.monitor = monitor
        self.n = len(atoms)
        self.pbc = bool(np.any(atoms.pbc))
        self.box = np.diag(np.asarray(atoms.cell.array, dtype=np.float64)).copy()
        self.min_distance = float(monitor.min_distance or 0.0)
        self.bonds = monitor.bonds
        # every replica's own starting topology and lengths (they may start apart)
        self.topologies = [m.bonds for m in (monitors or [monitor])]
        self.lengths = [getattr(m, "bond_lengths", None) for m in (monitors or [monitor])]
        if self.bonds is not None:
            c = monitor.criteria
            radii = monitor.radii
            self.form = c.bond_form_factor * (radii[:, None] + radii[None, :])  # (N, N)
            self.break_factor = c.bond_break_factor
            self.max_dev = c.max_bond_deviation

    @classmethod
    def build(cls, monitors, atoms) -> Optional["GeometryScreen"]:
        """A screen for replicas with these monitors, or None where it does not apply."""
        if not monitors or atoms is None or len(atoms) < 2:
            return None
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        if np.any(atoms.pbc):
            if not np.all(atoms.pbc) or np.any(np.abs(cell - np.diag(np.diag(cell))) > 1e-12):
                return None
            first = monitors[0]
            reach = max(first.min_distance or 0.0, *(_bond_reach(m) for m in monitors))
            if reach >= 0.5 * float(np.min(np.diag(cell))):
                return None  # a criterion reaches past the nearest image
        tops = [None if m.bonds is None else (tuple(m.bonds[0]), tuple(m.bonds[1]))
                for m in monitors]
        if any(t != tops[0] for t in tops):
            return None  # replicas with different topologies: one by one
        return cls(monitors[0], atoms, monitors)

    def _distances(self, pos: np.ndarray) -> np.ndarray:
        """(k, N, N) pair distances (minimum image when periodic)."""
        vec = pos[:, None, :, :] - pos[:, :, None, :]  # (k, N, N, 3): x_j - x_i
        if self.pbc:
            vec = vec - np.round(vec / self.box) * self.box
        return np.sqrt((vec * vec).sum(-1))

    def flag(self, positions: np.ndarray, replicas) -> np.ndarray:
        """Indices (into ``replicas``) of the replicas that may fail a distance or bond check."""
        out = []
        idx = np.asarray(replicas)
        for start in range(0, len(idx), BLOCK):
            block = idx[start:start + BLOCK]
            d = self._distances(positions[block])
            np.einsum("kii->ki", d)[:] = np.inf
            bad = np.zeros(len(block), dtype=bool)
            if self.min_distance:
                bad |= d.reshape(len(block), -1).min(1) < self.min_distance + SLACK
            if self.bonds is not None:
                bad |= self._bond_flags(d, block)
            out.append(np.nonzero(bad)[0] + start)
        return np.concatenate(out) if out else np.zeros(0, dtype=int)

    def _bond_flags(self, d: np.ndarray, block) -> np.ndarray:
        bi, bj = self.bonds
        bad = np.zeros(len(block), dtype=bool)
        if len(bi):
            db = d[:, bi, bj]  # (k, bonds)
            radii = self.monitor.radii
            bad |= (db > self.break_factor * (radii[bi] + radii[bj]) - SLACK).any(1)
            if self.max_dev is not None:
                ref = np.stack([self.lengths[r] for r in block]) if len(self.lengths) > 1 \
                    else self.lengths[0][None]
                bad |= (np.abs(db - ref) > self.max_dev - SLACK).any(1)
        close = d < self.form + SLACK  # (k, N, N), diagonal inf
        close[:, bi, bj] = False
        close[:, bj, bi] = False
        return bad | close.reshape(len(block), -1).any(1)


def _bond_reach(monitor: FailureMonitor) -> float:
    if monitor.bonds is None:
        return 0.0
    c = monitor.criteria
    return float(2.0 * monitor.radii.max() * max(c.bond_break_factor, c.bond_form_factor))

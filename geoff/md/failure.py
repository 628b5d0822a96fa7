"""Failure detection: the first step at which a trajectory stops being physical.

A ``FailureMonitor`` is built from the starting structure and asked, after every step, whether
the new state fails one of the ``FailureCriteria``:

* ``nan``: a non-finite position, velocity, force or energy;
* ``force``: a force component magnitude above ``max_force`` (eV/Å);
* ``temperature``: T above ``temperature_factor`` x the target (NVT) or starting (NVE) T;
* ``distance``: two atoms closer than ``min_distance`` (Å; by default ``min_distance_factor``
  x the shortest distance of the starting structure, at most 1 Å below it, and never below
  the absolute floor ``geoff.structure_checks.OVERLAP_FLOOR`` = 0.5 Å, so a start with
  overlapping atoms fails at step 0; ``min_distance=0`` turns the check off);
* ``bond``: (molecules, i.e. non-periodic structures, or ``check_bonds=True``) a bond of the
  starting topology longer than ``bond_break_factor`` x (r_cov,i + r_cov,j), or a pair not
  bonded at the start closer than ``bond_form_factor`` x (r_cov,i + r_cov,j). The starting
  topology is the pairs closer than ``bond_factor`` x (r_cov,i + r_cov,j) (ASE's covalent
  radii); the gaps between the factors keep thermal vibrations from counting as events;
* ``bond_length``: (with ``max_bond_deviation``, Å) a bond of the starting topology whose
  length differs from its starting (equilibrium) length by more than that: Fu et al.'s
  criterion for molecules ("Forces are not Enough", TMLR 2023: 0.5 Å).

The harness stops the run at that step, keeps what it has written, and reports the step and
the reason.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
from ase import units

from ..graph import neighbour_list
from ..structure_checks import OVERLAP_FLOOR
from .fields import from_dict


@dataclass
class FailureCriteria:
    max_force: Optional[float] = 50.0  # eV/Å
    temperature_factor: Optional[float] = 5.0  # x target (or starting) temperature
    min_distance: Optional[float] = None  # Å; None: from min_distance_factor
    min_distance_factor: Optional[float] = 0.5  # x shortest starting distance
    check_bonds: Optional[bool] = None  # None: only for non-periodic structures
    bond_factor: float = 1.2
    bond_break_factor: float = 1.75
    bond_form_factor: float = 1.0
    max_bond_deviation: Optional[float] = None  # Å from the starting bond length (Fu: 0.5)
    check_every: int = 1

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "FailureCriteria":
        return from_dict(cls, dict(d or {}), "failure criteria")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Failure:
    step: int
    reason: str  # "nan" | "force" | "temperature" | "distance" | "bond" | "bond_length" | "error"
    message: str
    details: dict = field(default_factory=dict)


def _shortest_distance(positions, cell, pbc, cutoff: float):
    """(d, i, j) of the closest pair within ``cutoff`` Å, or (inf, -1, -1) if none."""
    i, j, shifts = neighbour_list(positions, cell, pbc, cutoff)
    if len(i) == 0:
        return float("inf"), -1, -1
    d = np.linalg.norm(positions[j] - positions[i] + shifts, axis=1)
    k = int(np.argmin(d))
    return float(d[k]), int(i[k]), int(j[k])


def _covalent_radii(atoms) -> np.ndarray:
    from ase.data import covalent_radii

    return covalent_radii[atoms.numbers]


class FailureMonitor:
    """Checks states against ``FailureCriteria`` relative to a starting structure."""

    def __init__(self, atoms, criteria: Optional[FailureCriteria] = None,
                 temperature_K: Optional[float] = None):
        self.criteria = c = criteria or FailureCriteria()
        self.temperature_K = temperature_K
        self.n_atoms = len(atoms)
        pos = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        self.min_distance = c.min_distance
        if self.min_distance is None:
            # Never below the absolute overlap floor: a start with atoms on top of each other
            # (shortest distance ~0) must fail at step 0, not set the threshold to ~0.
            self.min_distance = OVERLAP_FLOOR
            if c.min_distance_factor and len(atoms) > 1:
                d0, _, _ = _shortest_distance(pos, cell, pbc, 6.0)
                if np.isfinite(d0):
                    self.min_distance = max(OVERLAP_FLOOR, c.min_distance_factor * d0, d0 - 1.0)
        self.check_bonds = c.check_bonds if c.check_bonds is not None else not np.any(pbc)
        self.bonds = None
        if self.check_bonds and len(atoms) > 1:
            radii = _covalent_radii(atoms)
            self.radii = radii
            reach = float(2.0 * radii.max() * max(c.bond_factor, c.bond_break_factor))
            i, j, shifts = neighbour_list(pos, cell, pbc, reach)
            d = np.linalg.norm(pos[j] - pos[i] + shifts, axis=1)
            bonded = (i < j) & (d < c.bond_factor * (radii[i] + radii[j]))
            self.bonds = (i[bonded], j[bonded])
            self.bond_lengths = d[bonded]  # the starting (equilibrium) lengths, Å
            self.bond_set = set(zip(i[bonded].tolist(), j[bonded].tolist()))

    def check(self, step: int, atoms, forces=None, energy=None, kinetic=None,
              n_dof: Optional[int] = None) -> Optional[Failure]:
        """The first failed criterion at ``step`` (None if the state is fine)."""
        c = self.criteria
        pos = np.asarray(atoms.positions)
        mom = atoms.get_momenta() if atoms.has("momenta") else None
        bad = []
        if not np.all(np.isfinite(pos)):
            bad.append("positions")
        if mom is not None and not np.all(np.isfinite(mom)):
            bad.append("velocities")
        if forces is not None and not np.all(np.isfinite(forces)):
            bad.append("forces")
        if energy is not None and not np.isfinite(energy):
            bad.append("energy")
        if bad:
            return Failure(step, "nan", f"non-finite {', '.join(bad)} at step {step}")
        if forces is not None and c.max_force is not None and len(forces):
            fmax = float(np.abs(forces).max())
            if fmax > c.max_force:
                atom = int(np.abs(forces).max(axis=1).argmax())
                return Failure(step, "force",
                               f"force component {fmax:.3g} eV/Å on atom {atom} exceeds "
                               f"{c.max_force:g} eV/Å at step {step}",
                               {"max_force": fmax, "atom": atom})
        if kinetic is not None and c.temperature_factor and self.temperature_K:
            t = 2.0 * kinetic / ((n_dof or 3 * self.n_atoms) * units.kB)
            if t > c.temperature_factor * self.temperature_K:
                return Failure(step, "temperature",
                               f"temperature {t:.0f} K exceeds {c.temperature_factor:g} x "
                               f"{self.temperature_K:g} K at step {step}", {"temperature": t})
        if (step % max(c.check_every, 1)) and step:
            return None
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if self.min_distance and self.n_atoms > 1:
            d, i, j = _shortest_distance(np.asarray(pos, dtype=np.float64), cell, pbc,
                                         self.min_distance)
            if d < self.min_distance:
                return Failure(step, "distance",
                               f"atoms {i} and {j} are {d:.3f} Å apart (threshold "
                               f"{self.min_distance:.3f} Å) at step {step}",
                               {"distance": d, "atoms": [i, j]})
        if self.bonds is not None:
            failure = self._check_bonds(step, pos, cell, pbc)
            if failure is not None:
                return failure
        return None

    def _check_bonds(self, step, pos, cell, pbc) -> Optional[Failure]:
        c = self.criteria
        radii = self.radii
        bi, bj = self.bonds
        if len(bi):
            vec = pos[bj] - pos[bi]
            if np.any(pbc):  # minimum image for bonds of periodic structures
                frac = np.linalg.solve(cell.T, vec.T).T
                frac[:, pbc] -= np.round(frac[:, pbc])
                vec = frac @ cell
            d = np.linalg.norm(vec, axis=1)
            if c.max_bond_deviation is not None:
                off = np.abs(d - self.bond_lengths)
                k = int(np.argmax(off))
                if off[k] > c.max_bond_deviation:
                    return Failure(step, "bond_length",
                                   f"bond {int(bi[k])}-{int(bj[k])} is {d[k]:.2f} Å, "
                                   f"{off[k]:.2f} Å from its starting {self.bond_lengths[k]:.2f}"
                                   f" Å (limit {c.max_bond_deviation:g} Å) at step {step}",
                                   {"bond": [int(bi[k]), int(bj[k])], "distance": float(d[k])})
            limit = c.bond_break_factor * (radii[bi] + radii[bj])
            broken = np.nonzero(d > limit)[0]
            if len(broken):
                k = int(broken[0])
                return Failure(step, "bond",
                               f"bond {int(bi[k])}-{int(bj[k])} broke: {d[k]:.2f} Å > "
                               f"{limit[k]:.2f} Å at step {step}",
                               {"broken": [int(bi[k]), int(bj[k])], "distance": float(d[k])})
        reach = float(2.0 * radii.max() * c.bond_form_factor)
        i, j, shifts = neighbour_list(np.asarray(pos, dtype=np.float64), cell, pbc, reach)
        keep = i < j
        i, j, shifts = i[keep], j[keep], shifts[keep]
        d = np.linalg.norm(pos[j] - pos[i] + shifts, axis=1)
        close = d < c.bond_form_factor * (radii[i] + radii[j])
        for a, b, dist in zip(i[close].tolist(), j[close].tolist(), d[close].tolist()):
            if (a, b) not in self.bond_set:
                return Failure(step, "bond",
                               f"new bond {a}-{b} formed ({dist:.2f} Å) at step {step}",
                               {"formed": [a, b], "distance": dist})
        return None

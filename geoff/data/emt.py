"""ASE's EMT potential, compiled with numba (the same numbers, 15-30x faster).

``ase.calculators.emt.EMT`` loops over atoms in Python and rebuilds its neighbour list in
Python; on a 108-atom Cu cell one call takes 30-70 ms on the development VM, which would make
``geoff data cu-emt`` take minutes. :class:`VectorisedEMT` takes every parameter (cut-off,
smoothing slope, per-element constants, chi) from an ``ase.calculators.emt.EMT`` instance and
evaluates the same expressions in one numba loop over neighbour pairs (about 1-2 ms for 108
atoms). Pairs come from :func:`small_cell_pairs`, a numba search over periodic images
(matscipy's binned list takes ~15 ms on these small cells), kept between calls (Verlet skin)
while no atom moves more than half the skin. It reproduces ASE's energy, per-atom energies,
forces and stress to rounding (``tests/test_data.py`` checks < 1e-10 eV): it is *the same
potential*, not a refit.
"""
from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.emt import EMT, beta
from numba import njit



class VectorisedEMT(Calculator):
    """Drop-in replacement for ``ase.calculators.emt.EMT`` (default ``asap_cutoff=False``).

    Stress is given for 3D-periodic cells only (ASE's EMT also returns one for slabs, with
    the vacuum in the volume; such a number is not a material stress and is left out here).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters = {"asap_cutoff": False}
    nolabel = True

    def __init__(self, skin: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.skin = float(skin)
        self._numbers = None
        self._pairs = None  # (i, j, shifts, reference positions, cell, pbc) of the last build

    def _initialise(self, atoms) -> None:
        ref = EMT(asap_cutoff=self.parameters["asap_cutoff"])
        ref.initialize(atoms)
        self.rc, self.rc_list, self.acut = ref.rc, ref.rc_list, ref.acut
        self.iz = np.asarray(ref.ia2iz, dtype=np.int64)  # (N,) element index of each atom
        self.par = {k: np.asarray(v, dtype=np.float64).copy() for k, v in ref.par.items()}
        self.chi = np.asarray(ref.chi, dtype=np.float64)  # (n_elements, n_elements)
        self._numbers = atoms.numbers.copy()
        self._pairs = None

    def pairs(self, atoms):
        """Neighbour pairs within ``rc_list + skin``, rebuilt only when needed."""
        pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
        if self._pairs is not None:
            i, j, shifts, ref, ref_cell, ref_pbc = self._pairs
            if ref.shape == pos.shape and np.array_equal(ref_cell, cell) and \
                    np.array_equal(ref_pbc, pbc):
                moved = np.sqrt(((pos - ref) ** 2).sum(axis=1)).max(initial=0.0)
                if 2.0 * moved < self.skin:
                    return i, j, shifts
        i, j, shifts = small_cell_pairs(pos, cell, pbc, self.rc_list + self.skin)
        self._pairs = (i, j, shifts, pos.copy(), cell.copy(), pbc.copy())
        return i, j, shifts

    def check_state(self, atoms, tol=1e-15):
        """What changed since the last call (exact comparisons; ASE's generic check is
        slower than an EMT evaluation of a small cell)."""
        if self.atoms is None:
            return list(all_changes)
        changes = []
        old = self.atoms
        if old.positions.shape != atoms.positions.shape or \
                not np.array_equal(old.positions, atoms.positions):
            changes.append("positions")
        if len(old) != len(atoms) or not np.array_equal(old.numbers, atoms.numbers):
            changes.append("numbers")
        if not np.array_equal(old.cell.array, atoms.cell.array):
            changes.append("cell")
        if not np.array_equal(old.pbc, atoms.pbc):
            changes.append("pbc")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if self._numbers is None or "numbers" in system_changes or \
                len(self._numbers) != len(atoms) or np.any(self._numbers != atoms.numbers):
            self._initialise(atoms)
        energies, forces, virial = emt_evaluate(self, atoms.positions, *self.pairs(atoms))
        self.results["energies"] = energies
        self.results["energy"] = self.results["free_energy"] = float(energies.sum())
        self.results["forces"] = forces
        if atoms.pbc.all():
            stress = 0.5 * (virial + virial.T) / atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise PropertyNotImplementedError(
                "stress needs a 3D-periodic cell; this structure has pbc="
                f"{atoms.pbc.tolist()}")


def emt_evaluate(p: VectorisedEMT, positions, i, j, shifts):
    """Per-atom energies (N,), forces (N,3) and the unsymmetrised virial sum (3,3).

    ``(i, j, shifts)`` are candidate pairs (``r_ij = x_j - x_i + shifts``); those beyond
    ``rc_list`` are dropped, exactly as ASE's EMT does.
    """
    par = p.par
    return _emt_kernel(
        np.ascontiguousarray(positions, dtype=np.float64), i, j,
        np.ascontiguousarray(shifts, dtype=np.float64), p.iz,
        par["E0"], par["s0"], par["V0"], par["eta2"], par["kappa"], par["lambda"],
        par["inv12gamma1"], par["neghalfv0overgamma2"], p.chi,
        float(p.rc), float(p.rc_list), float(p.acut), float(beta))


@njit(cache=True)
def _emt_kernel(pos, pi, pj, shifts, iz, E0, s0, V0, eta2, kappa, lam, inv12gamma1, nh, chi,
                rc, rc_list, acut, beta_):
    n = pos.shape[0]
    n_pairs = pi.shape[0]
    energies = np.zeros(n)
    forces = np.zeros((n, 3))
    virial = np.zeros((3, 3))
    sigma1 = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    # Per kept pair: displacement, distance, dw/dr / w, and the four sigma terms.
    d = np.empty((n_pairs, 3))
    r = np.empty(n_pairs)
    dw = np.empty(n_pairs)
    s1 = np.empty((n_pairs, 2))
    e2 = np.empty((n_pairs, 2))
    kept = np.empty(n_pairs, dtype=np.int64)
    m = 0
    # Pass 1: distances, sigma1 and the pair part of the atomic-sphere energy.
    for p in range(n_pairs):
        a, b = pi[p], pj[p]
        dx = pos[b, 0] - pos[a, 0] + shifts[p, 0]
        dy = pos[b, 1] - pos[a, 1] + shifts[p, 1]
        dz = pos[b, 2] - pos[a, 2] + shifts[p, 2]
        rr = np.sqrt(dx * dx + dy * dy + dz * dz)
        if rr >= rc_list:
            continue
        za, zb = iz[a], iz[b]
        w = 1.0 / (1.0 + np.exp(acut * (rr - rc)))
        c = chi[za, zb]
        x1b = np.exp(-eta2[zb] * (rr - beta_ * s0[zb]))
        x2b = np.exp(-kappa[zb] * (rr / beta_ - s0[zb]))
        if za == zb:
            x1a, x2a = x1b, x2b
        else:
            x1a = np.exp(-eta2[za] * (rr - beta_ * s0[za]))
            x2a = np.exp(-kappa[za] * (rr / beta_ - s0[za]))
        kept[m] = p
        d[m, 0], d[m, 1], d[m, 2], r[m] = dx, dy, dz, rr
        dw[m] = acut * (w - 1.0)
        s1[m, 0] = x1b * c * w  # dsigma1s
        s1[m, 1] = x1a / c * w  # dsigma1o
        e2[m, 0] = nh[za] * x2b * c * w  # es
        e2[m, 1] = nh[zb] * x2a / c * w  # eo
        sigma1[a] += s1[m, 0]
        energies[a] += 0.5 * (e2[m, 0] + e2[m, 1])
        count[a] += 1
        m += 1
    # Per atom: the cohesive function E_c(s) and dE/dsigma1.
    deds = np.zeros(n)
    for a in range(n):
        za = iz[a]
        if count[a] > 0:
            ds = -np.log(sigma1[a] * inv12gamma1[za]) / (beta_ * eta2[za])
            lds = lam[za] * ds
            exp_lds = np.exp(-lds)
            six_v0_exp = 6.0 * V0[za] * np.exp(-kappa[za] * ds)
            energies[a] += E0[za] * (1.0 + lds) * exp_lds + six_v0_exp
            deds[a] = (-E0[za] * lam[za] * lds * exp_lds - kappa[za] * six_v0_exp) / (
                -beta_ * eta2[za] * sigma1[a])
        energies[a] -= E0[za]  # ASAP convention: relative to the isolated atom
    # Pass 2: forces and virial.
    for q in range(m):
        p = kept[q]
        a, b = pi[p], pj[p]
        za, zb = iz[a], iz[b]
        dedr = (deds[a] * s1[q, 0] * (dw[q] - eta2[zb]) + deds[b] * s1[q, 1] * (dw[q] - eta2[za])
                + e2[q, 0] * (dw[q] - kappa[zb] / beta_) + e2[q, 1] * (dw[q] - kappa[za] / beta_))
        scale = dedr / r[q]
        for k in range(3):
            fk = scale * d[q, k]
            forces[a, k] += fk
            for l in range(3):
                virial[l, k] += 0.5 * d[q, l] * fk
    return energies, forces, virial


def small_cell_pairs(positions, cell, pbc, cutoff):
    """All pairs ``(i, j, shifts)`` closer than ``cutoff`` (Å), periodic images included.

    A numba search over the periodic images each pair can reach: fast for the small cells
    (tens to hundreds of atoms, cut-off comparable to the cell) that matscipy's binning is
    slow on. ``r_ij = x_j - x_i + shifts``. Non-periodic directions need no cell vector.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.array(cell, dtype=np.float64)
    if not pbc.any():
        cell = np.eye(3)
    elif not pbc.all():
        # Replace non-periodic vectors by unit vectors orthogonal to the periodic ones.
        periodic = cell[pbc]
        q, _ = np.linalg.qr(periodic.T, mode="complete")
        for k, vec in zip(np.flatnonzero(~pbc), q[:, len(periodic):].T):
            cell[k] = vec
    frac = positions @ np.linalg.inv(cell)
    offset = np.where(pbc, np.floor(frac), 0.0)           # wrap periodic directions to [0, 1)
    frac = frac - offset
    reach = np.where(pbc, cutoff * np.linalg.norm(np.linalg.inv(cell).T, axis=1), -1.0)
    i, j, S = _pair_search(frac, cell, reach, float(cutoff))
    shifts = (S - offset[j] + offset[i]) @ cell
    return i, j, shifts


@njit(cache=True)
def _image_range(f, reach):
    """Image indices s with |f + s| <= reach along one direction (reach < 0: not periodic)."""
    if reach < 0.0:
        return 0, 1
    return int(np.ceil(-f - reach)), int(np.floor(-f + reach)) + 1


@njit(cache=True)
def _pair_search(frac, cell, reach, cutoff):
    n = frac.shape[0]
    cut2 = cutoff * cutoff
    capacity = 64 * n
    out_i = np.empty(capacity, dtype=np.int64)
    out_j = np.empty(capacity, dtype=np.int64)
    out_s = np.empty((capacity, 3))
    m = 0
    for a in range(n):
        for b in range(n):
            f0 = frac[b, 0] - frac[a, 0]
            f1 = frac[b, 1] - frac[a, 1]
            f2 = frac[b, 2] - frac[a, 2]
            lo0, hi0 = _image_range(f0, reach[0])
            lo1, hi1 = _image_range(f1, reach[1])
            lo2, hi2 = _image_range(f2, reach[2])
            for s0 in range(lo0, hi0):
                for s1 in range(lo1, hi1):
                    for s2 in range(lo2, hi2):
                        if a == b and s0 == 0 and s1 == 0 and s2 == 0:
                            continue
                        g0, g1, g2 = f0 + s0, f1 + s1, f2 + s2
                        x = g0 * cell[0, 0] + g1 * cell[1, 0] + g2 * cell[2, 0]
                        y = g0 * cell[0, 1] + g1 * cell[1, 1] + g2 * cell[2, 1]
                        z = g0 * cell[0, 2] + g1 * cell[1, 2] + g2 * cell[2, 2]
                        if x * x + y * y + z * z < cut2:
                            if m == capacity:
                                capacity *= 2
                                out_i = np.concatenate((out_i, np.empty_like(out_i)))
                                out_j = np.concatenate((out_j, np.empty_like(out_j)))
                                out_s = np.concatenate((out_s, np.empty_like(out_s)))
                            out_i[m], out_j[m] = a, b
                            out_s[m, 0], out_s[m, 1], out_s[m, 2] = s0, s1, s2
                            m += 1
    return out_i[:m].copy(), out_j[:m].copy(), out_s[:m].copy()

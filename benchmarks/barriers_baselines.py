"""Baselines for per-atom barriers: the mean predictor and descriptors + ridge regression.

Descriptors of atom i (Cu-Zr, Å, eV), one row per atom:

* per-atom potential energy (EAM ``energies`` of the inherent structure) and species;
* coordination: neighbours within 3.4 Å, by neighbour species;
* radial symmetry functions G2 = sum_j exp(-eta (r_ij - r_s)^2) f_c(r_ij), per neighbour
  species, r_s on a 2.2-5.8 Å grid (eta 4 Å^-2), cutoff 6 Å (cosine f_c);
* angular symmetry functions G4 = 2^(1-zeta) sum_{j<k} (1 + lambda cos theta_ijk)^zeta
  exp(-eta (r_ij^2 + r_ik^2)) f_c f_c, zeta in {1, 4}, lambda ±1, eta 0.02, cutoff 4.5 Å.

Ridge regression on standardised descriptors, the penalty chosen by leave-one-glass-out
validation on the training glasses.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

SHELL = 3.4
# Å: first minima of the partial g(r) of Cu64Zr36 (Mendelev EAM glasses made here: Cu-Cu
# 3.0-3.6 flat, Cu-Zr 3.4-4.0, Zr-Zr ~3.8)
FIRST_SHELL = {(29, 29): 3.3, (29, 40): 3.6, (40, 29): 3.6, (40, 40): 3.8}
RADIAL_CUTOFF, ANGULAR_CUTOFF = 6.0, 4.5
RADIAL_CENTRES = np.linspace(2.2, 5.8, 10)
RADIAL_ETA = 4.0
ANGULAR = [(1, 1.0), (1, -1.0), (4, 1.0), (4, -1.0)]  # (zeta, lambda)
ANGULAR_ETA = 0.02
ELEMENTS = (29, 40)  # Cu, Zr


def _fc(r, rc):
    return 0.5 * (np.cos(np.pi * r / rc) + 1.0) * (r < rc)


def descriptors(atoms) -> np.ndarray:
    """(N, D) descriptor rows of every atom of a periodic structure (see module docstring)."""
    from ase.neighborlist import neighbor_list

    n = len(atoms)
    z = atoms.numbers
    i, j, d = neighbor_list("ijd", atoms, RADIAL_CUTOFF)
    cols: List[np.ndarray] = []
    cols.append(per_atom_energies(atoms)[0])
    cols.append((z == ELEMENTS[1]).astype(float))
    for el in ELEMENTS:
        sel = (z[j] == el)
        cols.append(np.bincount(i[sel & (d < SHELL)], minlength=n).astype(float))
        for rs in RADIAL_CENTRES:
            w = np.exp(-RADIAL_ETA * (d[sel] - rs) ** 2) * _fc(d[sel], RADIAL_CUTOFF)
            cols.append(np.bincount(i[sel], weights=w, minlength=n))
    cols += list(_angular(atoms).T)
    return np.column_stack(cols)


def per_atom_energies(atoms):
    """(EAM per-atom energies (N,) eV, their source): the frame's ``energies`` array, else the
    Mendelev EAM through LAMMPS, else matscipy's EAM, else zeros (source ``"missing"``)."""
    pe = atoms.arrays.get("energies")
    if pe is None and atoms.calc is not None:
        pe = atoms.calc.results.get("energies")
    if pe is not None:
        return np.asarray(pe, dtype=float), "data"
    try:
        from geoff.data.eam_engine import EamEngine

        engine = EamEngine(atoms)
        try:
            return engine.energies(atoms.positions.ravel()), "lammps"
        finally:
            engine.close()
    except Exception:  # no lammps module (the GPU machine): matscipy reads the same file
        pass
    try:
        from matscipy.calculators.eam import EAM

        from geoff.data.cuzr_eam import potential_file

        copy = atoms.copy()
        copy.calc = EAM(str(potential_file()), kind="eam/fs")
        return np.asarray(copy.get_potential_energies(), dtype=float), "matscipy"
    except Exception:
        return np.zeros(len(atoms)), "missing"


def _angular(atoms) -> np.ndarray:
    from ase.neighborlist import neighbor_list

    n = len(atoms)
    i, j, d, vec = neighbor_list("ijdD", atoms, ANGULAR_CUTOFF)
    out = np.zeros((n, len(ANGULAR)))
    starts = np.searchsorted(i, np.arange(n + 1))
    for a in range(n):
        s, e = starts[a], starts[a + 1]
        v, r = vec[s:e], d[s:e]
        if e - s < 2:
            continue
        cos = (v @ v.T) / np.outer(r, r)
        radial = np.exp(-ANGULAR_ETA * (r[:, None] ** 2 + r[None, :] ** 2)) \
            * np.outer(_fc(r, ANGULAR_CUTOFF), _fc(r, ANGULAR_CUTOFF))
        upper = np.triu_indices(len(r), 1)
        for c, (zeta, lam) in enumerate(ANGULAR):
            term = 2.0 ** (1 - zeta) * (1 + lam * cos) ** zeta * radial
            out[a, c] = term[upper].sum()
    return out


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float):
    """(mean, std, weights, intercept) of ridge regression on standardised columns."""
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    xs = (x - mu) / sd
    w = np.linalg.solve(xs.T @ xs + alpha * np.eye(x.shape[1]), xs.T @ (y - y.mean()))
    return mu, sd, w, y.mean()


def ridge_predict(model, x: np.ndarray) -> np.ndarray:
    mu, sd, w, b = model
    return ((x - mu) / sd) @ w + b


def ridge_cv(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray],
             alphas=(0.1, 1.0, 10.0, 100.0, 1000.0)) -> float:
    """The penalty with the lowest leave-one-glass-out MAE (one array per training glass)."""
    if len(xs) < 2:
        return 10.0
    best, best_mae = alphas[0], np.inf
    for alpha in alphas:
        errs = []
        for k in range(len(xs)):
            tr_x = np.concatenate([x for m, x in enumerate(xs) if m != k])
            tr_y = np.concatenate([y for m, y in enumerate(ys) if m != k])
            errs.append(np.abs(ridge_predict(ridge_fit(tr_x, tr_y, alpha), xs[k]) - ys[k]))
        mae = float(np.concatenate(errs).mean())
        if mae < best_mae:
            best, best_mae = alpha, mae
    return best


def metrics(pred: np.ndarray, ref: np.ndarray) -> dict:
    """MAE (eV), R² and Spearman's rank correlation."""
    from scipy.stats import spearmanr

    resid = pred - ref
    ss = float(((ref - ref.mean()) ** 2).sum())
    rho = spearmanr(pred, ref).statistic if np.ptp(pred) > 0 else float("nan")
    return {"mae": float(np.abs(resid).mean()),
            "r2": 1.0 - float((resid ** 2).sum()) / ss if ss > 0 else float("nan"),
            "spearman": float(rho), "n": int(ref.size)}


def bootstrap_mae(pred: np.ndarray, ref: np.ndarray, n: int = 2000, seed: int = 0) -> list:
    """95 % bootstrap interval of the MAE (eV), resampling test atoms with replacement.

    Atoms of one glass are correlated, so this understates the spread over glasses."""
    err = np.abs(np.asarray(pred) - ref)
    idx = np.random.default_rng(seed).integers(0, err.size, size=(n, err.size))
    return [float(v) for v in np.percentile(err[idx].mean(1), [2.5, 97.5])]


def paired_mae_difference(pred_a: np.ndarray, pred_b: np.ndarray, ref: np.ndarray,
                          n: int = 2000, seed: int = 0) -> dict:
    """MAE(a) - MAE(b) (eV) on the same atoms, with its 95 % paired bootstrap interval."""
    d = np.abs(np.asarray(pred_a) - ref) - np.abs(np.asarray(pred_b) - ref)
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n, d.size))
    lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5])
    return {"difference": float(d.mean()), "ci": [float(lo), float(hi)]}


def icosahedral_centres(atoms, cutoff=None) -> np.ndarray:
    """Boolean (N,): atoms with 12 neighbours whose 12 bonds are all 1551-like (common-
    neighbour analysis: the bonded pair shares 5 neighbours joined by 5 bonds), i.e. the
    centre of a full icosahedron, the Voronoi <0,0,12,0> motif of Cu-centred order in CuZr.

    ``cutoff``: bond length, Å, one number or ``{(Z1, Z2): Å}``; default ``FIRST_SHELL`` (the
    first minima of the partial g(r) of Cu64Zr36: a single 3.4 Å cut drops the Zr-Zr bonds
    of the icosahedron's shell, 3.0-3.8 Å, and misses most centres).
    """
    from ase.neighborlist import neighbor_list

    i, j = neighbor_list("ij", atoms, FIRST_SHELL if cutoff is None else cutoff)
    neigh = [set() for _ in range(len(atoms))]
    for a, b in zip(i, j):
        neigh[a].add(int(b))
    out = np.zeros(len(atoms), dtype=bool)
    for a in range(len(atoms)):
        if len(neigh[a]) != 12:
            continue
        ok = True
        for b in neigh[a]:
            common = neigh[a] & neigh[b]
            bonds = sum(len(neigh[c] & common) for c in common) // 2
            if len(common) != 5 or bonds != 5:
                ok = False
                break
        out[a] = ok
    return out

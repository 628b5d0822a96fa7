"""``cuzr-barriers``: per-atom activation barriers of Cu64Zr36 glasses (Mendelev EAM).

What is generated
-----------------
``n`` independent glasses (one frame each). Each is melt-quenched by ``cuzr_eam.generate``
(seed ``seed * 1000 + glass``; ``n_atoms`` default 200; a fast schedule: melt ``melt_ps`` at
2000 K, hold ``hold_ps`` per stage, 100 K/ps between stages, down to 300 K) in its own
worker process, then relaxed in LAMMPS to its inherent structure (conjugate gradient).

In each glass ``atoms_per_glass`` atoms (default all, in a seeded random order) get
``attempts`` activation attempts each (``art.activate``, ART-nouveau style; every atom's
first attempt is queued before any second one, so that a deadline leaves as many labelled
atoms as it can): push the atom and its first shell (``shell`` Å, default 3.4) in 0.1 Å
increments along a random direction, relaxing the perpendicular forces, until the lowest
curvature (Lanczos on finite-difference Hessian-vector products) is below -0.3 eV/Å²;
converge along the lowest mode to max force 0.05 eV/Å (and a Newton step to the saddle
along it below 0.05 Å); check one negative curvature (lowest < -0.01 eV/Å², the lowest
orthogonal to it > -0.01 eV/Å²); relax into the next minimum (from the other side of the
saddle if the first falls back into the start). An event is accepted when its barrier is
> 0, the final minimum differs from the start (some atom moved > 0.1 Å, the cell's net drift
removed) and it is *centred*: the atom moving most from the minimum to the saddle is the
sampled atom or in its shell. Settings: ``art`` (``ArtSettings`` field overrides).

Labels (per-atom extxyz arrays; NaN for atoms without an accepted event): ``barrier_mean``
and ``barrier_min`` (eV, over the accepted events), ``n_events`` (accepted) and
``barrier_attempts`` (tried); and the EAM labels of the inherent structure: ``energy``,
``forces``, per-atom ``energies`` (eV). Frame info: ``generator``, ``seed``, ``glass``,
``glass_seconds`` (quench + events, summed over workers).

Parallel and bounded: glasses and chunks of atoms run over ``jobs`` processes, one serial
LAMMPS (``eam_engine.EamEngine``) per process and glass. With ``deadline_s`` the workers
start no attempt after that many seconds from the start and everything finished is kept.
With ``glass_dir`` each glass is written there (``glass_NNN.extxyz`` + provenance JSON) as
soon as it is done, so a killed run keeps its finished glasses (``barrier_merge`` joins them).
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
from ase import Atoms

from . import cuzr_eam
from .art import ArtSettings, activate
from .barrier_merge import after_write  # noqa: F401  (geoff.data.generate calls it)
from .io import label
from .saddle import barrier_labels, centred, first_shell

NAME = "cuzr-barriers"
DEFAULT_N = 4  # glasses
N_ATOMS = 200
SHELL = 3.4  # Å: first-shell radius (first minimum of g(r) of Cu64Zr36 is ~3.4-3.7 Å)
QUENCH = dict(melt_ps=4.0, hold_ps=0.5, interval_ps=0.1, quench_rate_K_per_ps=100.0)
CHUNK = 4  # atoms per task: small, so that a deadline cuts glasses evenly
CENTRING = ("the atom moving most from the minimum to the saddle is the sampled atom or "
            "within its first shell")


def make_glass(seed: int, glass: int, n_atoms: int, quench: Dict) -> Atoms:
    """A relaxed Cu64Zr36 glass (inherent structure at 0 K), labelled with its EAM results."""
    from .eam_engine import EamEngine

    frames, _ = cuzr_eam.generate(n=len(cuzr_eam.STAGES_K), seed=int(seed * 1000 + glass),
                                  n_atoms=n_atoms, **quench)
    atoms = frames[-1].copy()  # the 300 K glass
    engine = EamEngine(atoms)
    try:
        x, energy = engine.relax(atoms.positions.ravel(), ftol=1e-8, steps=10000)
        _, forces = engine(x)
        energies = engine.energies(x)
    finally:
        engine.close()
    atoms.positions = x.reshape(-1, 3)
    return label(atoms, energy=energy, forces=forces.reshape(-1, 3), energies=energies)


def _glass_task(seed, glass, n_atoms, quench):
    start = time.perf_counter()
    atoms = make_glass(seed, glass, n_atoms, quench)
    return glass, atoms, time.perf_counter() - start


_ENGINE: Dict = {}  # per worker process: {"glass": key, "engine": EamEngine}


def _engine_for(key, atoms: Atoms):
    from .eam_engine import EamEngine

    if _ENGINE.get("key") != key:
        if "engine" in _ENGINE:
            _ENGINE["engine"].close()
        _ENGINE.update(key=key, engine=EamEngine(atoms))
    return _ENGINE["engine"]


def _atoms_task(glass, atoms: Atoms, indices, attempt, seed, shell, settings, deadline):
    """Attempt number ``attempt`` on each of ``indices`` of one glass; no attempt starts
    after ``deadline`` (``time.time()``). Returns one record per atom tried."""
    if deadline is not None and time.time() > deadline:
        return glass, []
    engine = _engine_for((seed, glass), atoms)
    x0 = atoms.positions.ravel().copy()
    e0 = engine(x0)[0]
    art = ArtSettings(**settings)
    records = []
    for index in indices:
        start = time.perf_counter()
        rng = np.random.default_rng([seed, glass, int(index), attempt])
        region = first_shell(atoms, int(index), shell)
        rec = {"index": int(index), "barriers": [], "outcomes": [], "force_calls": 0}
        if deadline is None or time.time() <= deadline:
            event = activate(engine, x0, e0, region, rng, art,
                             relax=lambda x: engine.relax(x, ftol=1e-4),
                             displacement=lambda a, b: drift_free(engine.displacement(a, b)))
            status = event.status
            if status == "accepted":
                most = int(np.argmax(event.saddle_displacement))
                if not centred(atoms, int(index), most, shell):
                    status = "not_centred"
            rec["outcomes"].append(status)
            rec["force_calls"] += event.force_calls
            if status == "accepted":
                rec["barriers"].append(float(event.barrier))
        rec["seconds"] = time.perf_counter() - start
        if rec["outcomes"]:
            records.append(rec)
    return glass, records


def drift_free(displacement: np.ndarray) -> np.ndarray:
    """A displacement (3N,) less its mean: the climb may translate the whole periodic cell
    (a zero mode), which is no event."""
    d = displacement.reshape(-1, 3)
    return (d - d.mean(axis=0)).ravel()


class _Inline:
    """A ``concurrent.futures`` executor that runs each task at once (``jobs=1``)."""

    def submit(self, func, *args):
        future = cf.Future()
        future.set_result(func(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def _executor(jobs: int):
    if jobs <= 1:
        return _Inline()
    return cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"))


def generate(n: int = DEFAULT_N, seed: int = 0, progress: Optional[Callable[[int], None]] = None,
             n_atoms: int = N_ATOMS, atoms_per_glass: Optional[int] = None, attempts: int = 2,
             jobs: int = 1, shell: float = SHELL, quench: Optional[Dict] = None,
             art: Optional[Dict] = None, deadline_s: Optional[float] = None,
             glass_dir=None):
    """``n`` glasses with per-atom barrier labels (see the module docstring)."""
    quench = dict(QUENCH, **(quench or {}))
    settings = {**ArtSettings().__dict__, **(art or {})}
    deadline = None if deadline_s is None else time.time() + float(deadline_s)
    glasses: Dict[int, Atoms] = {}
    seconds = {g: 0.0 for g in range(n)}
    records: Dict[int, List[Dict]] = {g: [] for g in range(n)}
    open_chunks: Dict[int, int] = {}
    pool = _executor(jobs)
    pending = {pool.submit(_glass_task, seed, g, n_atoms, quench) for g in range(n)}
    # First attempts on every atom of every glass go before second attempts anywhere, so
    # that a deadline leaves as many labelled atoms as possible.
    later = collections.deque()
    try:
        while pending or later:
            while later and len(pending) < 2 * jobs:  # keep the workers fed, no more
                pending.add(pool.submit(_atoms_task, *later.popleft()))
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                result = future.result()
                if isinstance(result[1], Atoms):  # a glass: queue its atoms in chunks
                    glass, atoms, sec = result
                    glasses[glass] = atoms
                    seconds[glass] += sec
                    chunks = _chunks(atoms, seed, glass, atoms_per_glass)
                    open_chunks[glass] = len(chunks) * attempts
                    tasks = [(glass, atoms, c, a, seed, shell, settings, deadline)
                             for a in range(attempts) for c in chunks]
                    first = tasks[:len(chunks)]
                    pending |= {pool.submit(_atoms_task, *t) for t in first}
                    later.extend(tasks[len(chunks):])
                else:
                    glass, recs = result
                    records[glass] += recs
                    seconds[glass] += sum(r["seconds"] for r in recs)
                    open_chunks[glass] -= 1
                if open_chunks.get(glass) == 0:
                    _glass_done(glasses[glass], records[glass], seed, glass, seconds[glass],
                                settings, glass_dir)
                    if progress is not None:
                        progress(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    frames = [labelled_frame(glasses[g], records[g], seed, g, seconds[g]) for g in sorted(glasses)]
    provenance = _provenance(records, seconds, frames, n_atoms, attempts, shell, quench,
                             settings, deadline_s)
    return frames, provenance


def _chunks(atoms: Atoms, seed: int, glass: int, atoms_per_glass: Optional[int]):
    k = len(atoms) if atoms_per_glass is None else min(int(atoms_per_glass), len(atoms))
    order = np.random.default_rng([seed, glass, 7]).permutation(len(atoms))[:k]
    return [order[i:i + CHUNK].tolist() for i in range(0, k, CHUNK)]


def _glass_done(atoms, recs, seed, glass, sec, settings, glass_dir) -> None:
    if glass_dir is None:
        return
    from .io import write_dataset, write_provenance

    path = Path(glass_dir) / f"glass_{glass:03d}.extxyz"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = labelled_frame(atoms, recs, seed, glass, sec)
    write_dataset([frame], path)
    write_provenance(path, {"generator": NAME, "seed": seed, "glass": glass,
                            "art": settings, "atoms": recs, "glass_seconds": round(sec, 2)})


def labelled_frame(atoms: Atoms, records: List[Dict], seed: int, glass: int,
                   seconds: float) -> Atoms:
    """The glass with the per-atom barrier arrays filled from its attempt records."""
    n = len(atoms)
    mean, low = np.full(n, np.nan), np.full(n, np.nan)
    accepted, tried = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    barriers: Dict[int, List[float]] = {}
    for rec in records:  # one record per atom and attempt
        i = rec["index"]
        barriers.setdefault(i, []).extend(rec["barriers"])
        tried[i] += len(rec["outcomes"])
    for i, values in barriers.items():
        mean[i], low[i] = barrier_labels(values)
        accepted[i] = len(values)
    out = label(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                energies=atoms.get_potential_energies())
    out.new_array("barrier_mean", mean)
    out.new_array("barrier_min", low)
    out.new_array("n_events", accepted)
    out.new_array("barrier_attempts", tried)
    out.info.update(generator=NAME, seed=seed, glass=glass, glass_seconds=round(seconds, 2),
                    calculator="eam/fs CuZr_mm.eam.fs")
    return out


def _provenance(records, seconds, frames, n_atoms, attempts, shell, quench, settings,
                deadline_s):
    from .barrier_merge import statistics

    all_recs = [r for recs in records.values() for r in recs]
    return {
        "calculator": f"Mendelev EAM {cuzr_eam.POTENTIAL} via LAMMPS (eam/fs, serial)",
        "glass": {"n_atoms": n_atoms, "quench": quench, "relax": "LAMMPS cg, ftol 1e-8"},
        "events": {"attempts_per_atom": attempts, "shell_A": shell, "art": settings,
                   "centring": CENTRING, "deadline_s": deadline_s},
        **statistics(frames, all_recs),
        "seconds_per_glass": {str(g): round(s, 2) for g, s in sorted(seconds.items())},
        "counts": {"glass": {f"{n_atoms} atoms": len(frames)}},
        "units": {"barrier_mean": "eV", "barrier_min": "eV", "energy": "eV",
                  "energies": "eV per atom", "forces": "eV/Å"},
    }

"""R independent replicas of one system advanced as one batched graph on one device.

  results = run_replicas(model, atoms, MDSettings(ensemble="langevin", steps=1000, seed=0),
                         replicas=8, output="runs/eth")            # seeds 0..7
  results = run_replicas(model, atoms, settings, temperatures=[300, 500, 700])

Replica r runs ``settings`` with seed ``settings.seed + r`` (or ``seeds[r]``) and temperature
``temperatures[r]`` (default ``settings.temperature_K``): its Maxwell-Boltzmann start and its
thermostat noise are those of the single run ``run_md(..., seed=seed_r)``, so it follows that
run (tested to 1e-10 in float64). One force call per step serves all replicas still running
(``geoff.md.replica_forces``); the integrators are vectorised (``geoff.md.replica_integrators``).

Each replica is checked after every step by its own ``FailureMonitor``; a replica that fails
is recorded with its step and reason, frozen and dropped from the batch, and the others go on.
The checks are first evaluated for all replicas at once: every step the per-step tests
(non-finite values, force, temperature: ``suspects``), every ``check_every`` steps the
distance and bond criteria (``geoff.md.replica_checks.GeometryScreen``, all pair distances
of all replicas); only a replica they flag goes through its own monitor, which decides
exactly as in a single run. So the Python loop over replicas runs only for flagged replicas
and on log and trajectory steps. Each writes what a single run writes, under ``<output>/replica_<r>/``
(trajectory, thermo.csv), and gets its own ``RunResult``; ``wall_s`` is the batch's
integration time (shared).

Multiple time stepping (``forces="mts"``, a ``force_head="both"`` model, NVE or Bussi) is
batched too (``BatchedMTS``). ``deadline`` (``time.time()`` seconds) stops the batch where it
is: the replicas still running end without a failure and ``steps_done < steps_requested``, a
censored run (kept, not lost). LAMMPS and reference calculators are single-replica only.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from ase import units

from .engines import EngineUnavailable, model_or_calculator
from .failure import Failure, FailureMonitor
from .integrators import degrees_of_freedom
from .recording import Recorder, RunResult, initial_velocities
from .replica_checks import GeometryScreen
from .replica_forces import BatchedForces
from .replica_integrators import make_batched_integrator
from .settings import MDSettings


def replica_plan(settings: MDSettings, replicas: Optional[int] = None,
                 seeds: Optional[Sequence[int]] = None,
                 temperatures: Optional[Sequence[float]] = None) -> List[MDSettings]:
    """The settings of each replica: seeds seed..seed+R-1 unless given, temperatures from
    ``temperatures`` (one per replica, or one for all)."""
    n = replicas or (len(seeds) if seeds else None) or (len(temperatures) if temperatures
                                                        else 1)
    seeds = list(seeds) if seeds else [settings.seed + r for r in range(n)]
    temps = list(temperatures) if temperatures else [settings.temperature_K]
    if len(temps) == 1:
        temps = temps * n
    if len(seeds) != n or len(temps) != n:
        raise ValueError(f"{n} replicas need {n} seeds and {n} temperatures (or one); got "
                         f"{len(seeds)} seeds and {len(temps)} temperatures")
    base = settings.to_dict()
    plans = []
    for s, t in zip(seeds, temps):
        d = {**base, "seed": int(s), "temperature_K": float(t)}
        if settings.init_temperature_K is not None and temperatures:
            d["init_temperature_K"] = float(t)  # a temperature ladder starts on its rungs
        plans.append(MDSettings.from_dict(d))
    return plans


def _same_system(atoms, structures, n: int) -> list:
    if structures is None:
        return [atoms] * n
    if len(structures) != n:
        raise ValueError(f"{n} replicas need {n} starting structures, got {len(structures)}")
    for k, other in enumerate(structures):
        if (list(other.numbers) != list(atoms.numbers) or list(other.pbc) != list(atoms.pbc)
                or not np.allclose(other.cell.array, atoms.cell.array)):
            raise ValueError(f"starting structure {k} is not the same system as the first "
                             "(species order, cell and pbc must match): replicas batch one "
                             "system")
    return list(structures)


def _start_temperature(s: MDSettings) -> float:
    return s.init_temperature_K if s.init_temperature_K is not None else s.temperature_K


class _Replica:
    """One replica's atoms (for the monitor and the writer), monitor and recorder."""

    def __init__(self, atoms, s: MDSettings, n_dof: int, output):
        self.s = s
        self.atoms = atoms
        start = _start_temperature(s)
        target = s.temperature_K if s.ensemble != "nve" else max(start, s.temperature_K)
        self.monitor = FailureMonitor(atoms, s.failure, temperature_K=target)
        self.recorder = Recorder(output, s.trajectory_format, len(atoms))
        self.failure = None
        self.steps_done = 0


def _prepare(structures, plans, n_dof, output):
    reps = []
    for r, (s, start) in enumerate(zip(plans, structures)):
        a = start.copy()
        a.calc = None
        initial_velocities(a, _start_temperature(s), s.seed, s.velocities)
        if isinstance(output, (list, tuple)):
            out = output[r]
        else:
            out = Path(output) / f"replica_{r:03d}" if output is not None else None
        reps.append(_Replica(a, s, n_dof, out))
    return reps


def suspects(integ, reps, active, n_dof: int) -> np.ndarray:
    """Of the replicas ``active``, those that may fail a per-step check of their monitor
    (non-finite state, force above ``max_force``, temperature above its limit): the same
    tests as ``FailureMonitor.check`` before its ``check_every`` gate, for all at once."""
    idx = np.asarray(active)
    k = len(idx)
    bad = ~(np.isfinite(integ.positions[idx].reshape(k, -1)).all(1)
            & np.isfinite(integ.momenta[idx].reshape(k, -1)).all(1)
            & np.isfinite(integ.forces[idx].reshape(k, -1)).all(1)
            & np.isfinite(integ.energy[idx]))
    c = reps[idx[0]].monitor.criteria if k else None
    if k and c.max_force is not None:
        with np.errstate(invalid="ignore"):
            bad |= np.abs(integ.forces[idx]).reshape(k, -1).max(1) > c.max_force
    if k and c.temperature_factor:
        limits = np.array([c.temperature_factor * (reps[r].monitor.temperature_K or np.inf)
                           for r in idx])
        with np.errstate(invalid="ignore"):
            bad |= 2.0 * integ.kinetic(idx) / (n_dof * units.kB) > limits
    return idx[bad]


def _to_look_at(integ, reps, active, step: int, s: MDSettings, n_dof: int, screen):
    """(replicas to check, replicas only to record) after ``step``: the suspects of the
    per-step tests, plus on a check step those the geometry screen flags (all of them without
    a screen); on a log or trajectory step every other running replica is recorded."""
    check = set(suspects(integ, reps, active, n_dof).tolist())
    if step % max(s.failure.check_every, 1) == 0:
        if screen is None:
            check = set(active)
        else:
            act = np.asarray(active)
            check |= set(act[screen.flag(integ.positions, act)].tolist())
    record = []
    if step % s.log_every == 0 or step % s.traj_every == 0:
        record = [r for r in active if r not in check]
    return sorted(check), record


def _observe(rep: _Replica, integ, r: int, step: int, n_dof: int, conserved,
             check: bool = True) -> bool:
    """Check replica ``r`` after ``step`` steps (unless ``check`` is false: a replica that the
    vectorised tests cleared); log and write when due. True if it failed."""
    s, atoms = rep.s, rep.atoms
    atoms.positions = integ.positions[r]
    atoms.set_momenta(integ.momenta[r], apply_constraint=False)
    energy, forces = float(integ.energy[r]), integ.forces[r]
    kinetic = float(integ.kinetic([r])[0])
    failure = rep.monitor.check(step, atoms, forces, energy, kinetic, n_dof) if check else None
    t_ps = step * s.timestep_fs / 1000.0
    # multiple time stepping: energies are comparable only at synchronised (outer) steps
    if (integ.synchronised and (step % s.log_every == 0 or failure is not None)
            and np.isfinite(energy)):
        rep.recorder.log(step, t_ps, energy, kinetic, float(conserved[r]),
                         2.0 * kinetic / (n_dof * units.kB))
    if step % s.traj_every == 0 or failure is not None:
        info = {"failure": failure.reason} if failure is not None else {}
        rep.recorder.frame(atoms, step, t_ps, energy, forces, keep=failure is None, **info)
    rep.failure = failure
    rep.steps_done = step
    return failure is not None


def _all_failed(reps, active, step: int, exc: Exception) -> None:
    """A batched step raised (not a NaN, which stays per replica): every running replica
    stops there with reason ``error``."""
    for r in active:
        reps[r].failure = Failure(step, "error", f"the batched step {step} raised "
                                                 f"{type(exc).__name__}: {exc}")
        reps[r].steps_done = step


def _integrate(integ, reps, settings: MDSettings, n_dof: int, deadline: Optional[float],
               screen=None) -> float:
    """Advance the replicas until they are done, failed or past ``deadline``; the
    integration wall time (s). ``screen``: a ``GeometryScreen`` of the replicas, or None."""
    wall, step = 0.0, 0
    conserved = integ.conserved()
    active = [r for r, rep in enumerate(reps) if not _observe(rep, integ, r, 0, n_dof,
                                                               conserved)]
    while active and step < settings.steps:
        if deadline is not None and time.time() > deadline:
            break  # censored: the running replicas keep steps_done = step, no failure
        t0 = time.perf_counter()
        try:
            integ.step(active)
        except Exception as exc:  # noqa: BLE001 - the batch cannot say which replica
            wall += time.perf_counter() - t0
            _all_failed(reps, active, step + 1, exc)
            return wall
        wall += time.perf_counter() - t0
        step += 1
        check, record = _to_look_at(integ, reps, active, step, settings, n_dof, screen)
        if check or record:
            conserved = integ.conserved()
            failed = {r for r in check if _observe(reps[r], integ, r, step, n_dof, conserved)}
            for r in record:
                _observe(reps[r], integ, r, step, n_dof, conserved, check=False)
            active = [r for r in active if r not in failed]
    for r in active:  # still running: done (or stopped at the deadline) at this step
        reps[r].steps_done = step
    return wall


def batched_forces(model, atoms, settings: MDSettings, cuda_graphs="auto"):
    """The ``BatchedForces`` of a run (``cuda_graphs``: see ``BatchedForces``)."""
    return BatchedForces(model, atoms, settings.device, settings.dtype,
                         settings.calculator_forces, cuda_graphs=cuda_graphs)


def run_replicas(potential, atoms, settings: Optional[MDSettings] = None, output=None,
                 replicas: Optional[int] = None, seeds: Optional[Sequence[int]] = None,
                 temperatures: Optional[Sequence[float]] = None,
                 structures: Optional[Sequence] = None,
                 deadline: Optional[float] = None, cuda_graphs="auto") -> List[RunResult]:
    """Run the replicas (see the module docstring); one ``RunResult`` per replica.

    ``structures``: optional starting structures, one per replica (the same system as
    ``atoms``: species, cell and pbc; e.g. frames of an equilibrated run, with their momenta
    when ``settings.velocities == "keep"``). ``output``: a folder (replica r writes under
    ``replica_<r>/``) or one folder per replica. ``deadline``: ``time.time()`` after which
    the batch stops (censored runs; see the module docstring). ``cuda_graphs``
    (``"auto"``, the default, ``True`` or ``False``): captured CUDA graphs for the force
    call (``BatchedForces``; eager on the CPU).
    """
    settings = settings or MDSettings()
    other = sorted(set(settings.calculator) - {"cuda_graphs"})
    if other:
        raise ValueError(f"batched replicas take cuda_graphs alone of the calculator options "
                         f"(one batched graph, no ASE calculator); drop {other}")
    cuda_graphs = settings.calculator.get("cuda_graphs", cuda_graphs)
    model, calc = model_or_calculator(potential)
    if model is None:
        raise EngineUnavailable("batched replicas need a geoff model (an EnergyModel or a "
                                "checkpoint); run a reference calculator one replica at a time")
    if settings.forces == "mts" and model.force_head != "both":
        raise ValueError("multiple time stepping needs a model with force_head='both' (one "
                         f"representation, both heads); this one is {model.force_head!r}")
    plans = replica_plan(settings, replicas, seeds, temperatures)
    n_dof = degrees_of_freedom(atoms, settings.ensemble)
    structures = _same_system(atoms, structures, len(plans))
    reps = _prepare(structures, plans, n_dof, output)
    forces = batched_forces(model, atoms, settings, cuda_graphs)
    integ = make_batched_integrator(
        settings.ensemble, [r.atoms.positions for r in reps],
        [r.atoms.get_momenta() for r in reps], atoms.get_masses(), forces,
        settings.timestep_fs, [s.temperature_K for s in plans], settings.tau_fs,
        [s.seed for s in plans], n_dof, settings.forces, settings.mts_steps)
    try:
        screen = GeometryScreen.build([rep.monitor for rep in reps], atoms)
        wall = _integrate(integ, reps, settings, n_dof, deadline, screen)
    finally:
        for rep in reps:
            rep.recorder.close()
    return [RunResult(engine="replicas", n_atoms=len(atoms), n_dof=n_dof,
                      steps_requested=s.steps, steps_done=rep.steps_done, failure=rep.failure,
                      thermo=rep.recorder.thermo(), frames=rep.recorder.frames, wall_s=wall,
                      trajectory=str(rep.recorder.trajectory) if rep.recorder.trajectory
                      else None,
                      thermo_path=str(rep.recorder.thermo_path) if rep.recorder.thermo_path
                      else None, settings=s.to_dict())
            for rep, s in zip(reps, plans)]


def replica_steps_per_s(results: Sequence[RunResult]) -> float:
    """Replica-steps per second of integration of one batched run."""
    wall = max((r.wall_s for r in results), default=float("nan"))
    return sum(r.steps_done for r in results) / wall if wall and wall > 0 else float("nan")

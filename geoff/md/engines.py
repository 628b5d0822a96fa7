"""The MD engines behind ``geoff.md.runners``: small adapters that the one loop drives.

An engine advances the state ``n`` steps, reads it back into an ``ase.Atoms`` and says what
the conserved quantity is; the loop (``Runner.run``) does the failure checks, the logging and
the timing, the same for every engine:

* ``ASEEngine``: the integrators of ``geoff.md.integrators`` on a calculator (geoff's
  ``GeoffCalculator``, a reference potential or any ASE calculator); one step per advance.
* ``LAMMPSEngine``: LAMMPS through its Python module with ``pair_style geoff`` (the plugin of
  ``geoff.lammps``) or a reference's own pair style (EAM), in chunks between the logged and
  written steps, reading positions, velocities and forces back after each chunk.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from ase import units
from ase.calculators.calculator import Calculator

from .failure import Failure
from .integrators import make_integrator
from .settings import MDSettings, Reference


class EngineUnavailable(RuntimeError):
    """The engine cannot run this potential/settings here; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Potentials -> calculators
# --------------------------------------------------------------------------------------------

def model_or_calculator(potential):
    """(model, None) for an EnergyModel/checkpoint, (None, calculator) otherwise."""
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
    """The ASE calculator for ``potential`` in ``settings.forces`` mode.

    ``mts`` integrates the conservative ``forces`` and the ``direct_forces`` of one
    ``force_head="both"`` model, so its calculator reports conservative ``forces``.
    """
    from ..calculators import GeoffCalculator

    model, calc = model_or_calculator(potential)
    if model is None:
        if settings.calculator:
            raise ValueError(f"calculator options {sorted(settings.calculator)} are geoff's "
                             "calculator's; a reference potential has none, drop them")
        if settings.forces != "conservative":
            raise ValueError(f"forces={settings.forces!r} needs a geoff model with a direct "
                             "head; a reference calculator has conservative forces only")
        return calc
    if settings.forces == "mts" and model.force_head != "both":
        raise ValueError("multiple time stepping needs a model with force_head='both' (one "
                         f"representation, both heads); this one is {model.force_head!r}")
    options = dict(settings.calculator)  # cuda_graphs: the calculator's "auto" unless set
    return GeoffCalculator(model, device=settings.device, dtype=settings.dtype,
                           forces=settings.calculator_forces,
                           check_overlaps=settings.failure.min_distance != 0,  # 0: user said off
                           **options)


def current_forces(atoms) -> Optional[np.ndarray]:
    """The forces that drove the last step, read from the calculator's cache (no new call)."""
    calc = atoms.calc
    for name in ("forces", "direct_forces"):
        value = calc.results.get(name) if calc is not None else None
        if value is not None:
            return np.asarray(value)
    return atoms.get_forces()


# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------

class ASEEngine:
    """ASE dynamics on ``atoms`` (which carry their velocities) with a calculator."""

    frame_on_error = True  # the state that raised is still in ``atoms``: keep it

    def __init__(self, potential, atoms, s: MDSettings, n_dof: int):
        self.atoms = atoms
        atoms.calc = make_calculator(potential, s)
        self.dyn = make_integrator(atoms, s.ensemble, s.timestep_fs, s.temperature_K, s.tau_fs,
                                   s.forces, s.mts_steps, s.seed, n_dof=n_dof)
        self._energy: Optional[float] = None

    def chunk(self, remaining: int) -> int:
        return 1

    def advance(self, n: int) -> None:
        """One step and its energy (so that the energy call is timed with the step)."""
        self.dyn.step()
        self._energy = float(self.atoms.get_potential_energy())

    def read(self, step: int) -> Tuple[float, np.ndarray, bool]:
        """(energy in eV, forces (N, 3) eV/Å, synchronised) of the current state."""
        energy = self._energy if step else float(self.atoms.get_potential_energy())
        synchronised = getattr(self.dyn, "synchronised", True) if step else True
        return energy, current_forces(self.atoms), synchronised

    def conserved(self, energy: float, kinetic: float) -> float:
        return self.dyn.conserved_energy()

    def error(self, step: int, exc: Exception) -> Failure:
        pos_ok = np.all(np.isfinite(self.atoms.positions))
        what = f"{type(exc).__name__}: {exc}"
        return Failure(step, "error" if pos_ok else "nan",
                       f"step {step} raised {what}" if pos_ok else
                       f"non-finite positions at step {step} ({what})")

    def close(self) -> None:
        pass


_LAMMPS_FIXES = {
    "nve": ["fix md all nve"],
    "langevin": ["fix md all nve", "fix bath all langevin {T} {T} {tau} {seed} tally yes",
                 "compute_modify thermo_temp extra/dof 0"],
    "bussi": ["fix md all nve", "fix bath all temp/csvr {T} {T} {tau} {seed}"],
    "nose-hoover": ["fix md all nvt temp {T} {T} {tau} tchain 3"],
}


class LAMMPSEngine:
    """LAMMPS through its Python module. Ensembles: ``fix nve``; ``fix langevin`` (tally
    yes); ``fix temp/csvr`` (Bussi); ``fix nvt`` (Nose-Hoover chain). The conserved quantity
    is pe + ke + ecouple (LAMMPS' ``econserve``; fix langevin's tally restarts at every
    ``run`` command, so its chunks are summed here)."""

    frame_on_error = False  # LAMMPS keeps no state to read back after an error

    def __init__(self, potential, atoms, s: MDSettings, workdir: Path):
        from ase.calculators.lammps import Prism

        from ..lammps.runtime import lammps_instance

        self.atoms, self.s = atoms, s
        species = sorted(set(atoms.get_chemical_symbols()),
                         key=lambda x: atoms.get_chemical_symbols().index(x))
        self.prism = Prism(atoms.cell.array, pbc=atoms.pbc)
        commands = self._commands(potential, species, Path(workdir))
        # between the logged/written steps; failures are detected at chunk ends
        self.every = math.gcd(s.log_every, s.traj_every)
        self.resets = s.ensemble == "langevin"
        self.ecouple = 0.0
        self.lmp = lammps_instance(args=("-screen", "none", "-log",
                                         str(Path(workdir) / "log.lammps")))
        try:
            for c in commands:
                self.lmp.command(c)
            self.lmp.command("run 0")
        except BaseException:
            self.lmp.close()
            raise

    def _commands(self, potential, species, workdir: Path) -> List[str]:
        from ase.io.lammpsdata import write_lammps_data

        s, atoms = self.s, self.atoms
        with open(workdir / "structure.lmp", "w") as fh:
            write_lammps_data(fh, atoms, specorder=species, masses=True, velocities=True,
                              units="metal", prismobj=self.prism, atom_style="atomic")
        pair = self._pair_lines(potential, species, workdir)
        boundary = " ".join("p" if p else "s" for p in atoms.pbc)
        fixes = [f.format(T=s.temperature_K, tau=s.tau_fs / 1000.0, seed=1 + (s.seed % 900000))
                 for f in _LAMMPS_FIXES[s.ensemble]]
        return ["units metal", "atom_style atomic", "atom_modify map yes",
                f"boundary {boundary}", f"read_data {workdir / 'structure.lmp'}", *pair,
                "neighbor 1.0 bin", f"timestep {s.timestep_fs / 1000.0}", *fixes,
                "thermo_style custom step pe ke etotal econserve temp",
                "thermo_modify norm no", "thermo 1000000000"]

    def _pair_lines(self, potential, species, workdir: Path) -> List[str]:
        from ..lammps.deploy import DeploymentError, model_pair_lines

        if isinstance(potential, Reference):
            from .references import lammps_pair

            return lammps_pair(potential.name, species, **potential.options)
        model, _ = model_or_calculator(potential)
        try:
            return model_pair_lines(model, species, workdir, self.s.calculator_forces,
                                    self.s.dtype)
        except DeploymentError as exc:
            raise EngineUnavailable(str(exc)) from None

    def chunk(self, remaining: int) -> int:
        return min(self.every, remaining)

    def advance(self, n: int) -> None:
        self.lmp.command(f"run {n} pre no post no")
        value = float(self.lmp.get_thermo("ecouple"))
        self.ecouple = self.ecouple + value if self.resets else value

    def read(self, step: int) -> Tuple[float, np.ndarray, bool]:
        """Positions and velocities into ``atoms``; (energy eV, forces (N, 3) eV/Å, True)."""
        lmp, atoms, prism = self.lmp, self.atoms, self.prism
        ids = np.asarray(lmp.numpy.extract_atom("id")).copy()
        order = np.argsort(ids[: len(atoms)])
        x = np.asarray(lmp.numpy.extract_atom("x"))[: len(atoms)][order]
        v = np.asarray(lmp.numpy.extract_atom("v"))[: len(atoms)][order]
        f = np.asarray(lmp.numpy.extract_atom("f"))[: len(atoms)][order]
        atoms.positions = prism.vector_to_ase(x)
        # metal velocities are Å/ps; ASE's are Å per ASE time unit
        atoms.set_velocities(prism.vector_to_ase(v) / (1000.0 * units.fs))
        return float(lmp.get_thermo("pe")), prism.vector_to_ase(f), True

    def conserved(self, energy: float, kinetic: float) -> float:
        return energy + kinetic + self.ecouple

    def error(self, step: int, exc: Exception) -> Failure:
        return Failure(step, "error", f"LAMMPS stopped near step {step}: {exc}")

    def close(self) -> None:
        self.lmp.close()

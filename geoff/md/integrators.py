"""Integrators for the harness: ASE's where they are right, ours where ASE has none.

Every integrator here is an ``ase.md.md.MolecularDynamics`` with two additions the harness
reads: ``n_dof`` (degrees of freedom used for the temperature) and ``conserved_energy()``
(eV), the quantity that stays constant up to integration error:

==============  ==========================================  ==================================
ensemble        integrator                                  conserved quantity
==============  ==========================================  ==================================
``nve``         velocity Verlet (``ase.md.verlet``)         E_pot + E_kin
``langevin``    BAOAB Langevin (``ase.md.langevinbaoab``,   E_pot + E_kin - heat, the heat
                Leimkuhler & Matthews 2013)                 being the kinetic energy the O
                                                            (Ornstein-Uhlenbeck) steps added
                                                            (Bussi & Parrinello, PRE 75,
                                                            056707, 2007: "effective energy")
``bussi``       stochastic velocity rescaling               E_pot + E_kin - sum of the rescaling
                (``ase.md.bussi``, Bussi, Donadio &         steps' kinetic-energy changes
                Parrinello 2007)
``nose-hoover`` Nose-Hoover chain (``ase.md.nose_hoover_    E_pot + E_kin + thermostat energy
                chain``, Martyna, Klein & Tuckerman 1992)
==============  ==========================================  ==================================

BAOAB is used for Langevin rather than ``ase.md.langevin.Langevin`` because its heat is
separable (only the O step exchanges energy with the bath), which is what makes the effective
energy above well defined; ASE's ``Langevin`` mixes friction, noise and forces in one update.

Degrees of freedom: velocity Verlet, Bussi and Nose-Hoover conserve the total momentum (and
the angular momentum of a free molecule), so the kinetic energy lives in 3N - 3 (3N - 6)
degrees of freedom; both thermostats here are told that number, otherwise a 32-atom cell
would run 3 % hot. Langevin dynamics thermostat all 3N.

Multiple time stepping (``MultipleTimeStepVerlet``): Bigi, Langer and Ceriotti, "The dark side
of the forces: assessing non-conservative force models for atomistic machine learning" (2024),
integrate with cheap direct forces and correct with the conservative ones every M steps. As an
r-RESPA splitting (Tuckerman, Berne & Martyna, J. Chem. Phys. 97, 1990 (1992)) of
F_cons = F_direct + (F_cons - F_direct):

    p += (M dt / 2) (F_cons - F_direct)(x)          # outer half kick, slow force
    M times: velocity Verlet with F_direct and dt   # inner steps, fast force
    p += (M dt / 2) (F_cons - F_direct)(x)          # outer half kick at the new x

One conservative evaluation (a backward pass) per M steps; the inner steps need only the
forward pass of a ``force_head="both"`` model. With M = 1 it is velocity Verlet with F_cons.
Each ``step()`` advances one inner step dt, so step counts and times mean the same for every
integrator; the state is synchronised (both outer kicks applied) when ``synchronised`` is true,
and only then is E_pot + E_kin the conserved quantity.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from ase import units
from ase.md.bussi import Bussi
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import NoseHooverChainNVT, NoseHooverChainThermostat
from ase.md.verlet import VelocityVerlet

ENSEMBLES = ("nve", "langevin", "bussi", "nose-hoover")
FORCE_MODES = ("conservative", "direct", "mts")
_ALIASES = {"csvr": "bussi", "svr": "bussi", "nh": "nose-hoover", "nhc": "nose-hoover",
            "nosehoover": "nose-hoover", "nose_hoover": "nose-hoover", "baoab": "langevin"}


def canonical_ensemble(name: str) -> str:
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {name!r}; choose one of {list(ENSEMBLES)} "
                         f"(aliases: {sorted(_ALIASES)})")
    return key


def degrees_of_freedom(atoms, ensemble: str) -> int:
    """Degrees of freedom that carry kinetic energy in ``ensemble`` (see module docstring)."""
    n = atoms.get_number_of_degrees_of_freedom()  # 3N less constrained ones
    if canonical_ensemble(ensemble) == "langevin":
        return int(n)
    if len(atoms) > 2 and not np.any(atoms.pbc):
        return int(max(n - 6, 1))
    return int(max(n - 3, 1))


# --------------------------------------------------------------------------------------------
# Thermostats with their conserved quantities
# --------------------------------------------------------------------------------------------

def _kinetic(atoms) -> float:
    return float(atoms.get_kinetic_energy())


class VelocityVerletNVE(VelocityVerlet):
    """Velocity Verlet (NVE). Conserved: E_pot + E_kin."""

    def __init__(self, atoms, timestep, n_dof: Optional[int] = None, **kwargs):
        super().__init__(atoms, timestep, **kwargs)
        self.n_dof = n_dof or degrees_of_freedom(atoms, "nve")

    def conserved_energy(self) -> float:
        return float(self.atoms.get_potential_energy()) + _kinetic(self.atoms)


class LangevinNVT(LangevinBAOAB):
    """BAOAB Langevin dynamics; ``tau`` = 1 / friction (ASE time units).

    Conserved: E_pot + E_kin - heat, with heat the sum of the O steps' kinetic-energy changes.
    """

    def __init__(self, atoms, timestep, temperature_K: float, tau: float, rng=None,
                 n_dof: Optional[int] = None, **kwargs):
        self.heat = 0.0
        super().__init__(atoms, timestep, temperature_K=temperature_K, T_tau=tau,
                         rng=np.random.default_rng(rng) if not isinstance(
                             rng, np.random.Generator) else rng, **kwargs)
        self.n_dof = n_dof or degrees_of_freedom(atoms, "langevin")

    def _BAOAB_OU(self, drag_gamma_mod=0.0):  # noqa: N802 - ASE's name
        before = _kinetic(self.atoms)
        super()._BAOAB_OU(drag_gamma_mod)
        self.heat += _kinetic(self.atoms) - before

    def conserved_energy(self) -> float:
        return float(self.atoms.get_potential_energy()) + _kinetic(self.atoms) - self.heat


class BussiNVT(Bussi):
    """Bussi-Donadio-Parrinello stochastic velocity rescaling; ``taut`` in ASE time units.

    Targets ``n_dof`` degrees of freedom (3N - 3 by default, see the module docstring).
    Conserved: E_pot + E_kin - transferred energy.
    """

    def __init__(self, atoms, timestep, temperature_K: float, taut: float, rng=None,
                 n_dof: Optional[int] = None, **kwargs):
        super().__init__(atoms, timestep, temperature_K, taut, rng=rng, **kwargs)
        self.n_dof = n_dof or degrees_of_freedom(atoms, "bussi")
        self.ndof = self.n_dof
        self.target_kinetic_energy = 0.5 * self.temp * self.n_dof

    def conserved_energy(self) -> float:
        return float(self.atoms.get_potential_energy()) + _kinetic(self.atoms) \
            - self.transferred_energy


class NoseHooverNVT(NoseHooverChainNVT):
    """Nose-Hoover chain NVT (``tdamp`` in ASE time units), thermostat on ``n_dof`` degrees of
    freedom. Conserved: E_pot + E_kin + thermostat energy (ASE's ``get_conserved_energy``)."""

    def __init__(self, atoms, timestep, temperature_K: float, tdamp: float, tchain: int = 3,
                 tloop: int = 1, n_dof: Optional[int] = None, **kwargs):
        super().__init__(atoms, timestep, temperature_K, tdamp, tchain=tchain, tloop=tloop,
                         **kwargs)
        self.n_dof = n_dof or degrees_of_freedom(atoms, "nose-hoover")
        # ASE's chain thermostats 3 * n_atoms degrees of freedom; the chain only sees that
        # number through 3 * num_atoms_global, so n_dof / 3 "atoms" gives n_dof.
        self._thermostat = NoseHooverChainThermostat(
            num_atoms_global=self.n_dof / 3.0, masses=self.masses,
            temperature_K=temperature_K, tdamp=tdamp, tchain=tchain, tloop=tloop)

    def conserved_energy(self) -> float:
        return self.get_conserved_energy()


def bussi_alpha(kinetic: float, target_kinetic: float, n_dof: int, decay: float, rng) -> float:
    """Bussi et al. (J. Chem. Phys. 126, 014101, 2007) eq. (A7): the velocity scale factor
    after a time t with ``decay`` = exp(-t / tau)."""
    if kinetic <= 0:
        raise ValueError("zero kinetic energy: give the atoms velocities before an NVT run")
    r1 = rng.standard_normal()
    rest = 2.0 * rng.standard_gamma(0.5 * (n_dof - 1)) if n_dof > 1 else 0.0
    term = (1.0 - decay) * target_kinetic / (kinetic * n_dof)
    alpha2 = decay + term * (rest + r1 * r1) + 2.0 * r1 * math.sqrt(decay * term)
    return math.sqrt(max(alpha2, 0.0))


class MultipleTimeStepVerlet(MolecularDynamics):
    """Multiple time stepping with direct inner forces and a conservative correction every
    ``mts_steps`` steps (see the module docstring). Needs a calculator with ``forces``
    (conservative) and ``direct_forces``: ``GeoffCalculator`` on a ``force_head="both"``
    model, which pays only the forward pass when only ``direct_forces`` are asked for.

    With ``temperature_K`` and ``taut`` a Bussi rescaling is applied at the start of each
    outer step (over its length M dt); conserved: E_pot + E_kin - transferred energy.
    """

    def __init__(self, atoms, timestep, mts_steps: int = 4, temperature_K: Optional[float] = None,
                 taut: Optional[float] = None, rng=None, n_dof: Optional[int] = None, **kwargs):
        super().__init__(atoms, timestep, **kwargs)
        if int(mts_steps) < 1:
            raise ValueError(f"mts_steps must be >= 1, got {mts_steps}")
        self.mts_steps = int(mts_steps)
        self.inner = 0
        self.n_dof = n_dof or degrees_of_freedom(atoms, "bussi" if temperature_K else "nve")
        self.temperature_K = temperature_K
        self.taut = taut
        if temperature_K is not None and not taut:
            raise ValueError("MTS with a thermostat needs taut (Bussi time constant)")
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.transferred_energy = 0.0
        self._slow = None

    @property
    def synchronised(self) -> bool:
        return self.inner % self.mts_steps == 0

    def _direct(self) -> np.ndarray:
        return np.asarray(self.atoms.calc.get_property("direct_forces", self.atoms))

    def _split(self):
        """(slow, fast) = (F_cons - F_direct, F_direct) at the current positions, one call."""
        f_cons = self.atoms.get_forces(md=True)  # forward + backward, fills direct_forces
        f_fast = self._direct()
        return f_cons - f_fast, f_fast

    def _thermostat(self, p: np.ndarray) -> np.ndarray:
        kinetic = 0.5 * float(np.sum(p * p / self.masses))
        target = 0.5 * units.kB * self.temperature_K * self.n_dof
        decay = math.exp(-self.mts_steps * self.dt / self.taut)
        alpha = bussi_alpha(kinetic, target, self.n_dof, decay, self.rng)
        self.transferred_energy += (alpha * alpha - 1.0) * kinetic
        return alpha * p

    def step(self, forces=None):
        atoms, dt, big = self.atoms, self.dt, self.mts_steps * self.dt
        p = atoms.get_momenta()
        if self.synchronised:
            if self.temperature_K is not None:
                p = self._thermostat(p)
            if self._slow is None:
                self._slow, _ = self._split()
            p = p + 0.5 * big * self._slow
        p = p + 0.5 * dt * self._direct()
        r = atoms.get_positions()
        atoms.set_positions(r + dt * p / self.masses)
        if atoms.constraints:
            p = (atoms.get_positions() - r) * self.masses / dt
        atoms.set_momenta(p, apply_constraint=False)
        self.inner += 1
        if self.synchronised:
            self._slow, fast = self._split()
            p = atoms.get_momenta() + 0.5 * dt * fast + 0.5 * big * self._slow
        else:
            p = atoms.get_momenta() + 0.5 * dt * self._direct()
        atoms.set_momenta(p)

    def conserved_energy(self) -> float:
        return float(self.atoms.get_potential_energy()) + _kinetic(self.atoms) \
            - self.transferred_energy


def make_integrator(atoms, ensemble: str = "nve", timestep_fs: float = 1.0,
                    temperature_K: float = 300.0, tau_fs: float = 100.0,
                    forces: str = "conservative", mts_steps: int = 4, seed: int = 0,
                    n_dof: Optional[int] = None):
    """The integrator for ``ensemble`` and force mode (calculator already on ``atoms``).

    ``tau_fs``: thermostat time constant (Langevin 1/friction, Bussi tau, Nose-Hoover tdamp).
    ``forces="mts"`` supports ``nve`` and ``bussi``.
    """
    ensemble = canonical_ensemble(ensemble)
    if forces not in FORCE_MODES:
        raise ValueError(f"forces must be one of {FORCE_MODES}, got {forces!r}")
    if timestep_fs <= 0:
        raise ValueError(f"timestep must be positive, got {timestep_fs} fs")
    dt = timestep_fs * units.fs
    tau = tau_fs * units.fs
    rng = np.random.default_rng(seed)
    n_dof = n_dof or degrees_of_freedom(atoms, ensemble)
    if forces == "mts":
        if ensemble == "nve":
            return MultipleTimeStepVerlet(atoms, dt, mts_steps=mts_steps, n_dof=n_dof)
        if ensemble == "bussi":
            return MultipleTimeStepVerlet(atoms, dt, mts_steps=mts_steps,
                                          temperature_K=temperature_K, taut=tau, rng=rng,
                                          n_dof=n_dof)
        raise ValueError(f"multiple time stepping supports ensembles 'nve' and 'bussi', "
                         f"not {ensemble!r}")
    if ensemble == "nve":
        return VelocityVerletNVE(atoms, dt, n_dof=n_dof)
    if ensemble == "langevin":
        return LangevinNVT(atoms, dt, temperature_K=temperature_K, tau=tau, rng=rng, n_dof=n_dof)
    if ensemble == "bussi":
        return BussiNVT(atoms, dt, temperature_K=temperature_K, taut=tau, rng=rng, n_dof=n_dof)
    return NoseHooverNVT(atoms, dt, temperature_K=temperature_K, tdamp=tau, n_dof=n_dof)

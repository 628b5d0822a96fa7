"""Vectorised integrators for R replicas of one system, the same algorithms (and the same
random-number use) as the single-replica integrators of ``geoff.md.integrators``:

==============  ============================================  ===============================
ensemble        step (per replica)                            conserved quantity
==============  ============================================  ===============================
``nve``         velocity Verlet                               E_pot + E_kin
``langevin``    BAOAB (B A O A B), O: v <- c v + s xi/sqrt(m)  E_pot + E_kin - heat
``bussi``       rescale p by Bussi's alpha, then velocity      E_pot + E_kin - transferred
                Verlet (as ``ase.md.bussi.Bussi``)
``nose-hoover`` Nose-Hoover chain, Suzuki-Yoshida 4th order    E_pot + E_kin + thermostat
                (as ``ase.md.nose_hoover_chain``)
MTS (``nve``,   r-RESPA: direct inner steps, a conservative     E_pot + E_kin (- transferred),
``bussi``)      correction every M (as ``integrators.           at synchronised steps only
                MultipleTimeStepVerlet``), Bussi per outer step
==============  ============================================  ===============================

Replica r has its own temperature, thermostat state and random stream
``np.random.default_rng(seed_r)`` drawn in the order the single-replica integrator draws, so
replica r with seed s follows the single run with seed s (up to float rounding: the batched
graph sums edges in another order).

State arrays: positions and momenta (R, N, 3) (Å, amu Å / ASE time), masses (N, 1) amu,
energy (R,) eV, forces (R, N, 3) eV/Å. ``step(active)`` advances only the replicas in
``active`` (indices); the others stay frozen. ``force_fn(positions (k, N, 3))`` returns
(energy (k,), forces (k, N, 3)).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from ase import units
from scipy.linalg import expm

from .integrators import bussi_alpha, canonical_ensemble

ForceFn = Callable[[np.ndarray], tuple]


class BatchedIntegrator:
    """Velocity Verlet for R replicas (NVE); the thermostats below extend it."""

    def __init__(self, positions, momenta, masses, force_fn: ForceFn, timestep_fs: float,
                 temperatures_K: Sequence[float], tau_fs: float, seeds: Sequence[int],
                 n_dof: int):
        if timestep_fs <= 0:
            raise ValueError(f"timestep must be positive, got {timestep_fs} fs")
        self.positions = np.array(positions, dtype=np.float64)
        self.momenta = np.array(momenta, dtype=np.float64)
        self.masses = np.asarray(masses, dtype=np.float64).reshape(-1, 1)
        self.force_fn = force_fn
        self.dt = timestep_fs * units.fs
        self.tau = tau_fs * units.fs
        self.temperatures = np.asarray(temperatures_K, dtype=np.float64)
        self.rngs = [np.random.default_rng(s) for s in seeds]
        self.n_dof = int(n_dof)
        self.energy, self.forces = force_fn(self.positions)
        self.bath = np.zeros(len(self.positions))  # energy given to the bath, eV

    #: energies are comparable (and the state complete) after this step; MTS: outer steps
    synchronised = True

    @property
    def n_replicas(self) -> int:
        return len(self.positions)

    def kinetic(self, idx=slice(None)) -> np.ndarray:
        """Kinetic energy (k,) eV of the replicas ``idx``."""
        p = self.momenta[idx]
        return 0.5 * np.einsum("rni,rni->r", p, p / self.masses)

    def conserved(self) -> np.ndarray:
        return self.energy + self.kinetic() + self.bath

    def _forces(self, idx) -> None:
        self.energy[idx], self.forces[idx] = self.force_fn(self.positions[idx])

    def _verlet(self, idx) -> None:
        p = self.momenta[idx] + 0.5 * self.dt * self.forces[idx]
        self.positions[idx] = self.positions[idx] + self.dt * p / self.masses
        self.momenta[idx] = p
        self._forces(idx)
        self.momenta[idx] = self.momenta[idx] + 0.5 * self.dt * self.forces[idx]

    def step(self, active) -> None:
        self._verlet(np.asarray(active))


class BatchedLangevin(BatchedIntegrator):
    """BAOAB with friction 1/tau; the O step draws rng.normal(size=(N, 3)) per replica."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        gamma = 1.0 / self.tau
        # the single-replica O step multiplies by expm(-gamma I dt): the same number here
        self.decay = float(expm(-(gamma * np.identity(3)) * self.dt)[0, 0])
        sigma = np.sqrt(2.0 * gamma * units.kB * self.temperatures)
        self.prefactor = (sigma / np.sqrt(2.0 * gamma)) * np.sqrt(
            1.0 - np.exp(-2.0 * gamma * self.dt))  # (R,)

    def step(self, active) -> None:
        idx = np.asarray(active)
        dt, m = self.dt, self.masses
        v = self.momenta[idx] / m + 0.5 * dt * self.forces[idx] / m  # B
        x = self.positions[idx] + 0.5 * dt * v  # A
        before = 0.5 * np.einsum("rni,rni->r", v * m, v)
        noise = np.stack([self.rngs[r].normal(size=v.shape[1:]) for r in idx])
        v = v * self.decay + self.prefactor[idx, None, None] * noise / np.sqrt(m)  # O
        self.bath[idx] -= 0.5 * np.einsum("rni,rni->r", v * m, v) - before
        self.positions[idx] = x + 0.5 * dt * v  # A
        self._forces(idx)
        self.momenta[idx] = (v + 0.5 * dt * self.forces[idx] / m) * m  # B


class BatchedBussi(BatchedIntegrator):
    """Stochastic velocity rescaling (one normal and one gamma draw per replica and step)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.decay = math.exp(-self.dt / self.tau)
        self.target = 0.5 * units.kB * self.temperatures * self.n_dof  # (R,)
        if np.any(self.kinetic() <= 1e-12):
            raise ValueError("zero kinetic energy in a replica: give the atoms velocities "
                             "before a Bussi run")

    def _alpha(self, r: int, kinetic: float) -> float:
        term = (1 - self.decay) * self.target[r] / kinetic / self.n_dof
        rng = self.rngs[r]
        normal = rng.standard_normal()
        gammas = 2.0 * rng.standard_gamma(0.5 * (self.n_dof - 1))
        return math.sqrt(self.decay + term * (gammas + normal ** 2)
                         + 2 * normal * math.sqrt(self.decay * term))

    def step(self, active) -> None:
        idx = np.asarray(active)
        kinetic = self.kinetic(idx)
        alpha = np.array([self._alpha(r, k) for r, k in zip(idx, kinetic)])
        self.momenta[idx] = alpha[:, None, None] * self.momenta[idx]
        self.bath[idx] -= (alpha ** 2 - 1.0) * kinetic
        self._verlet(idx)


class BatchedNoseHoover(BatchedIntegrator):
    """Nose-Hoover chains (length ``tchain``) on ``n_dof`` degrees of freedom per replica."""

    def __init__(self, *args, tchain: int = 3, tloop: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        from .nose_hoover import ChainState

        self.chain = ChainState(self.temperatures, self.n_dof, self.tau, tchain, tloop)

    def conserved(self) -> np.ndarray:
        return self.energy + self.kinetic() + self.chain.energy()

    def step(self, active) -> None:
        idx = np.asarray(active)
        half = self.dt / 2
        self.momenta[idx] = self.chain.integrate(self.momenta[idx], self.masses, half, idx)
        self.momenta[idx] = self.momenta[idx] + half * self.forces[idx]
        self.positions[idx] = self.positions[idx] + self.dt * self.momenta[idx] / self.masses
        self._forces(idx)
        self.momenta[idx] = self.momenta[idx] + half * self.forces[idx]
        self.momenta[idx] = self.chain.integrate(self.momenta[idx], self.masses, half, idx)


class BatchedMTS(BatchedIntegrator):
    """Multiple time stepping of R replicas, step for step ``MultipleTimeStepVerlet``:
    ``mts_steps`` inner velocity-Verlet steps with direct forces inside outer half kicks of
    (F_cons - F_direct); with ``thermostat`` a Bussi rescaling over each outer step (one
    ``bussi_alpha`` draw per replica). ``forces``: a ``BatchedForces`` of a
    ``force_head="both"`` model (its ``split`` and ``direct``). ``forces`` (R, N, 3) holds
    what drove the last step: conservative at synchronised steps, direct between them."""

    def __init__(self, positions, momenta, masses, forces, timestep_fs, temperatures_K,
                 tau_fs, seeds, n_dof, mts_steps: int = 4, thermostat: bool = False):
        if int(mts_steps) < 1:
            raise ValueError(f"mts_steps must be >= 1, got {mts_steps}")
        self.mts_steps, self.thermostat, self.inner = int(mts_steps), thermostat, 0
        self.split_fn = forces.split
        self.direct_fn = forces.direct
        super().__init__(positions, momenta, masses, self._first, timestep_fs,
                         temperatures_K, tau_fs, seeds, n_dof)
        self.decay = math.exp(-self.mts_steps * self.dt / self.tau) if thermostat else 1.0
        self.target = 0.5 * units.kB * self.temperatures * self.n_dof  # (R,)

    def _first(self, positions):
        """The starting state: energy and conservative forces; keeps the split."""
        energy, cons, fast = self.split_fn(positions)
        self.slow, self.fast = cons - fast, fast
        return energy, cons

    @property
    def synchronised(self) -> bool:
        return self.inner % self.mts_steps == 0

    def step(self, active) -> None:
        idx = np.asarray(active)
        dt, big, m = self.dt, self.mts_steps * self.dt, self.masses
        p = self.momenta[idx]
        if self.synchronised:
            if self.thermostat:
                kinetic = self.kinetic(idx)
                alpha = np.array([bussi_alpha(k, self.target[r], self.n_dof, self.decay,
                                              self.rngs[r]) for r, k in zip(idx, kinetic)])
                self.bath[idx] -= (alpha ** 2 - 1.0) * kinetic
                p = alpha[:, None, None] * p
            p = p + 0.5 * big * self.slow[idx]
        p = p + 0.5 * dt * self.fast[idx]
        self.positions[idx] = self.positions[idx] + dt * p / m
        self.inner += 1
        if self.synchronised:
            energy, cons, fast = self.split_fn(self.positions[idx])
            self.slow[idx], self.forces[idx] = cons - fast, cons
            p = p + 0.5 * dt * fast + 0.5 * big * self.slow[idx]
        else:
            energy, fast = self.direct_fn(self.positions[idx])
            self.forces[idx] = fast
            p = p + 0.5 * dt * fast
        self.energy[idx], self.fast[idx] = energy, fast
        self.momenta[idx] = p


_CLASSES = {"nve": BatchedIntegrator, "langevin": BatchedLangevin, "bussi": BatchedBussi,
            "nose-hoover": BatchedNoseHoover}


def make_batched_integrator(ensemble: str, positions, momenta, masses, force_fn: ForceFn,
                            timestep_fs: float, temperatures_K, tau_fs: float, seeds,
                            n_dof: int, forces: str = "conservative",
                            mts_steps: int = 4) -> BatchedIntegrator:
    """The batched integrator of ``ensemble`` (see the module docstring); ``forces="mts"``
    (``nve`` or ``bussi``) needs ``force_fn`` to be a ``BatchedForces`` of a "both" model."""
    ensemble = canonical_ensemble(ensemble)
    if forces == "mts":
        if ensemble not in ("nve", "bussi"):
            raise ValueError(f"multiple time stepping supports ensembles 'nve' and 'bussi', "
                             f"not {ensemble!r}")
        return BatchedMTS(positions, momenta, masses, force_fn, timestep_fs, temperatures_K,
                          tau_fs, seeds, n_dof, mts_steps=mts_steps,
                          thermostat=ensemble == "bussi")
    return _CLASSES[ensemble](positions, momenta, masses, force_fn, timestep_fs,
                              temperatures_K, tau_fs, seeds, n_dof)


__all__ = ["BatchedBussi", "BatchedIntegrator", "BatchedLangevin", "BatchedMTS",
           "BatchedNoseHoover", "make_batched_integrator"]

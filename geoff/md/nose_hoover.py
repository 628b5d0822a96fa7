"""Nose-Hoover chain thermostats of R replicas at once (the scheme of
``ase.md.nose_hoover_chain.NoseHooverChainThermostat``, Martyna, Klein & Tuckerman 1992,
with Suzuki-Yoshida 4th-order substeps), each replica with its own temperature and chain.

Arrays: Q, eta, p_eta (R, tchain). The first link acts on ``n_dof`` degrees of freedom
(geoff's single-replica ``NoseHooverNVT`` passes n_dof / 3 "atoms" to ASE, the same thing).
"""
from __future__ import annotations

import numpy as np
from ase import units

FOURTH_ORDER = (1 / (2 - 2 ** (1 / 3)), -(2 ** (1 / 3)) / (2 - 2 ** (1 / 3)),
                1 / (2 - 2 ** (1 / 3)))


class ChainState:
    def __init__(self, temperatures_K, n_dof: int, tdamp: float, tchain: int = 3,
                 tloop: int = 1):
        if tchain < 1:
            raise ValueError(f"tchain must be >= 1, got {tchain}")
        self.kT = units.kB * np.asarray(temperatures_K, dtype=np.float64)  # (R,)
        # ASE's 3 * num_atoms_global with num_atoms_global = n_dof / 3
        self.g0 = 3 * (n_dof / 3.0)
        self.tchain, self.tloop = int(tchain), int(tloop)
        r = len(self.kT)
        self.Q = np.empty((r, tchain))
        self.Q[:, 0] = self.g0 * self.kT * tdamp ** 2
        self.Q[:, 1:] = (self.kT * tdamp ** 2)[:, None]
        self.eta = np.zeros((r, tchain))
        self.p_eta = np.zeros((r, tchain))

    def energy(self) -> np.ndarray:
        """Thermostat energy (R,) eV."""
        return (self.g0 * self.kT * self.eta[:, 0] + self.kT * self.eta[:, 1:].sum(axis=1)
                + np.sum(0.5 * self.p_eta ** 2 / self.Q, axis=1))

    def integrate(self, p: np.ndarray, masses: np.ndarray, delta: float, idx) -> np.ndarray:
        """Momenta p (k, N, 3) of replicas ``idx`` after exp(i L_NHC delta)."""
        for _ in range(self.tloop):
            for coeff in FOURTH_ORDER:
                p = self._loop(p, masses, coeff * delta / self.tloop, idx)
        return p

    def _p_eta(self, p, masses, j, delta2, delta4, idx):
        Q, p_eta, last = self.Q[idx], self.p_eta[idx], self.tchain - 1
        if j < last:
            p_eta[:, j] *= np.exp(-delta4 * p_eta[:, j + 1] / Q[:, j + 1])
        if j == 0:
            g = np.sum(p ** 2 / masses, axis=(1, 2)) - self.g0 * self.kT[idx]
        else:
            g = p_eta[:, j - 1] ** 2 / Q[:, j - 1] - self.kT[idx]
        p_eta[:, j] += delta2 * g
        if j < last:
            p_eta[:, j] *= np.exp(-delta4 * p_eta[:, j + 1] / Q[:, j + 1])
        self.p_eta[idx] = p_eta

    def _loop(self, p, masses, delta, idx):
        delta2, delta4 = delta / 2, delta / 4
        for j in range(self.tchain):
            self._p_eta(p, masses, self.tchain - j - 1, delta2, delta4, idx)
        self.eta[idx] = self.eta[idx] + delta * self.p_eta[idx] / self.Q[idx]
        p = p * np.exp(-delta * self.p_eta[idx, 0] / self.Q[idx, 0])[:, None, None]
        for j in range(self.tchain):
            self._p_eta(p, masses, j, delta2, delta4, idx)
        return p

"""Small MD helpers shared by the generators (ASE's Langevin, seeded)."""
from __future__ import annotations

import numpy as np
from ase import Atoms, units


def thermalise(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K``, zero total momentum."""
    from ase.md import velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):  # ase >= 3.29
        vd.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:  # pragma: no cover - older ase
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)


def langevin(atoms: Atoms, timestep_fs: float, temperature_K: float, friction_per_fs: float,
             rng: np.random.Generator):
    """ASE ``Langevin`` with the centre of mass held by ``FixCom`` (ASE's recommended form)."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    if not any(isinstance(c, FixCom) for c in atoms.constraints):
        atoms.set_constraint(list(atoms.constraints) + [FixCom()])
    return Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                    friction=friction_per_fs / units.fs, fixcm=False, rng=rng)

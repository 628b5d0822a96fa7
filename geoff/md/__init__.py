"""Molecular dynamics with geoff potentials and the stability harness.

One trajectory:

* ``geoff.md.runners``: ``run_md`` / ``get_runner("ase" | "lammps")``, the engine loop written
  once; ``geoff.md.engines``: the ASE and LAMMPS adapters it drives, ``make_calculator``
* ``geoff.md.settings``: ``MDSettings``, ``Reference``; ``geoff.md.recording``: thermo log,
  trajectory and ``RunResult``
* ``geoff.md.integrators``: NVE, Langevin (BAOAB), Bussi, Nose-Hoover, multiple time stepping
* ``geoff.md.failure``: failure detection (NaN, force, temperature, distance, bonds)
* ``geoff.md.metrics``: drift, fluctuation, temperature, KE distribution, RDF, Jacobian
  asymmetry, speed
* ``geoff.md.references``: reference potentials (EMT, EAM, xTB)

R replicas of one system as one batched graph (``geoff md --replicas``):

* ``geoff.md.replicas``: ``run_replicas``; ``replica_forces`` (the batched force call),
  ``replica_integrators`` and ``nose_hoover`` (vectorised NVE, Langevin, Bussi, NHC),
  ``study_replicas`` (a study's seeds as replicas), ``rdf_failure`` (a liquid's time to
  failure by windowed RDF error)

A study (``geoff stability``), models x systems x ensembles x dt x seeds:

* ``geoff.md.stability``: the config format and the names below in one place;
  ``study_config`` (schema), ``structures``, ``study_runs`` (plan, typed run records),
  ``study`` (``run_study``), ``analysis`` (per run), ``summary`` (across runs), ``study_io``,
  ``report`` and ``plots``. ``geoff md`` runs one trajectory.

Names are imported lazily, so ``geoff --help`` does not pay for torch and ASE's MD modules.
"""
from importlib import import_module

_EXPORTS = {"MDSettings": "settings", "Reference": "settings", "RunResult": "recording",
            "get_runner": "runners", "run_md": "runners", "FailureCriteria": "failure",
            "run_study": "study", "load_config": "study_config", "run_replicas": "replicas"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

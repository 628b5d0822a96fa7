"""Molecular dynamics with geoff potentials and the stability harness.

* ``geoff.md.runners``: ``run_md`` / ``get_runner("ase" | "lammps")``, ``MDSettings``,
  ``Reference``
* ``geoff.md.integrators``: NVE, Langevin (BAOAB), Bussi, Nose-Hoover, multiple time stepping
* ``geoff.md.failure``: failure detection (NaN, force, temperature, distance, bonds)
* ``geoff.md.metrics``: drift, fluctuation, temperature, KE distribution, RDF, Jacobian
  asymmetry, speed
* ``geoff.md.stability``: ``run_study(config)``, the models x systems x ensembles x dt x seeds
  matrix with its CSV, plots and report (``geoff stability``); ``geoff md`` runs one trajectory

Names are imported lazily, so ``geoff --help`` does not pay for torch and ASE's MD modules.
"""
from importlib import import_module

_EXPORTS = {"MDSettings": "runners", "Reference": "runners", "RunResult": "runners",
            "get_runner": "runners", "run_md": "runners", "FailureCriteria": "failure",
            "run_study": "stability"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

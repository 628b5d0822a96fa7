"""Stability studies: ``run_study(config)`` runs models x systems x ensembles x dt x seeds.

A study answers, for each model: does the trajectory survive, is the energy conserved, is the
temperature right, is the structure right (against a reference potential run at the same
conditions), how far are its forces from a gradient field, and how fast is it. The config is a
YAML file (or the same dict)::

    name: demo
    engine: ase                      # default engine (ase | lammps); a model may override
    dtype: float64
    models:                          # label -> a checkpoint and how to integrate it
      - {name: conservative, checkpoint: ${CONS}, forces: conservative}
      - {name: direct, checkpoint: runs/direct.ckpt, forces: direct}
      - {name: mts, checkpoint: runs/both.ckpt, forces: mts, mts_steps: 4}
      # or random weights, for tests: {name: x, build: {name: schnet, species: [Cu],
      #                                cutoff: 4.0, force_head: both, n_features: 16}}
      # or any ASE calculator (conservative forces): module:factory and its keyword arguments
      - {name: emt, calculator: "ase.calculators.emt:EMT", kwargs: {}}
      # or a reference potential of geoff.md.references as a row: {name: r, reference: emt}
    baseline: conservative           # speed-ups are relative to it (default: the first
                                     # conservative model; a model may name its own)
    systems:
      - name: cu-fcc-32
        structure: {bulk: Cu, crystalstructure: fcc, a: 3.61, cubic: true, repeat: [2, 2, 2]}
        # or {file: path.extxyz, index: 0}, or {molecule: H2O, vacuum: 5}; optional rattle
        reference: emt               # or {name: eam, file: Cu_u3.eam}; null: no reference
    ensembles:                       # MDSettings fields (ensemble, temperature_K, tau_fs,
      - {name: nve-600K, ensemble: nve, temperature_K: 600, time_ps: 1.0}  # steps or time_ps;
                                     # timesteps_fs: [...] overrides the study's for one)
      - {name: nvt-600K, ensemble: bussi, temperature_K: 600, tau_fs: 100, time_ps: 1.0}
    timesteps_fs: [1.0, 2.0]
    seeds: [0, 1]
    replicas: false                  # true: a cell's seeds advance as one batched graph
    md: {log_every: 10, traj_every: 20}      # MDSettings defaults for every run
    failure: {max_force: 20, temperature_factor: 3}
    analysis: {equilibration_fraction: 0.2, rdf_r_max: 6.0, rdf_bins: 150,
               jacobian_structures: 2, force_timing: true}

Calculator objects go to ``run_study(config, calculators={"name": calc})`` (a new row, or the
calculator of a row the config names). Direct forces and multiple time stepping are geoff's
own: such a row with a foreign calculator, or a calculator row on the LAMMPS engine, is
reported under "Not run" with the reason, like every run that cannot be made.

Paths are relative to the config file; ``${VAR}`` is expanded from the environment;
``checkpoints={"direct": path}`` (``--checkpoint direct=path``) replaces a model's checkpoint.
``time_ps`` makes every dt simulate the same time (what a dt sweep needs).

The reference potential of each system is run once per ensemble at the smallest dt with the
first seed; its RDF is what every model's RDF error is measured against (Fu et al. 2023, see
``geoff.md.metrics``) and it appears in the tables as ``ref:<name>``.

Outputs (in ``output``): ``runs/<model>/<system>/<ensemble>/dt<dt>fs/seed<seed>/`` with
``trajectory.extxyz``, ``thermo.csv`` and ``metrics.json`` per run; ``results.csv`` (one row
per run), ``summary.csv`` (mean and spread over seeds), ``models.csv`` (Jacobian asymmetry and
force-call speed per model and system), PNG plots and ``report.md`` that embeds them.

The study is cut along its ideas; this module gathers the names scripts and the CLI use:

==========================  ====================================================================
``geoff.md.study_config``   the schema: ``load_config``, ``StudyConfig``, ``ModelSpec``
``geoff.md.structures``     ``build_structure``
``geoff.md.study_runs``     ``plan``, ``Run``, ``RunKey``, ``RunRecord``
``geoff.md.study``          ``run_study``: execution (or reading runs back from disk)
``geoff.md.analysis``       ``analyse_run``: the metrics of one run
``geoff.md.summary``        cross-run numbers: RDF errors, speed-ups, model table, ``summarise``
``geoff.md.study_io``       JSON and CSV files, saved trajectories
``geoff.md.report``         ``report.md`` (``geoff.md.plots`` draws its figures)
==========================  ====================================================================
"""
from __future__ import annotations

from .analysis import analyse_run
from .recording import empty_thermo, read_thermo
from .structures import build_structure
from .study import run_study
from .study_config import (ModelSpec, StudyConfig, ensemble_timesteps, label, load_config,
                           run_settings)
from .study_io import RESULT_COLUMNS, write_json
from .study_runs import Run, RunKey, RunRecord, plan
from .summary import finite, summarise

__all__ = ["RESULT_COLUMNS", "ModelSpec", "Run", "RunKey", "RunRecord", "StudyConfig",
           "analyse_run", "build_structure", "empty_thermo", "ensemble_timesteps", "finite",
           "label", "load_config", "plan", "read_thermo", "run_settings", "run_study",
           "summarise", "write_json"]

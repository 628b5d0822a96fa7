"""Stability study: models x systems x ensembles x time steps x seeds, from a YAML config.

  geoff stability geoff/md/configs/demo.yaml --out demo-output/stability \\
      --checkpoint conservative=runs/cons.ckpt --checkpoint direct=runs/direct.ckpt \\
      --checkpoint mts=runs/both.ckpt

For every run: trajectory, thermo log and metrics (energy drift and fluctuation, temperature
and kinetic-energy distribution, time to failure, RDF error against a reference potential run
at the same conditions, steps/s); per model: the Jacobian asymmetry of its forces and the cost
of a force call; per study: results.csv, summary.csv, models.csv, PNG plots and report.md.
The config format is documented in ``geoff.md.stability`` (a model row may be a geoff
checkpoint, a reference potential or any ASE calculator as ``module:factory``); ``${VAR}``
in it is read from the environment.

Splitting a study over processes or GPUs: start one `geoff stability CONFIG --out DIR --only
MODEL --resume` per model (and one for the reference, e.g. `--only ref:emt`), then
`geoff stability CONFIG --out DIR --resume` writes the tables, plots and report (running what
is missing), or `--report-only` (running nothing; missing runs are reported as not run).
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="study config (YAML), e.g. geoff/md/configs/demo.yaml")
    p.add_argument("-o", "--out", "--output", dest="out", default=None,
                   help="output folder (default: the config's output, else "
                        "stability-output/<name>)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                   help="checkpoint of a model named in the config (repeatable)")
    p.add_argument("--engine", choices=["ase", "lammps"], default=None,
                   help="engine for every model (default: the config's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    p.add_argument("--dt", type=float, nargs="+", default=None,
                   help="override the time steps (fs) of every ensemble")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 is usually fastest for small cells)")
    p.add_argument("--replicas", action="store_true",
                   help="run the seeds of each model/system/ensemble/dt as one batched "
                        "replica run (the config's `replicas: true`; ASE engine, geoff models)")
    p.add_argument("--resume", action="store_true",
                   help="reuse runs whose metrics.json already exists")
    p.add_argument("--only", nargs="+", default=None, metavar="MODEL",
                   help="run only these models of the config ('ref:emt' etc. for a reference "
                        "potential) and write no report: to split a study over processes or "
                        "GPUs into one --out, then run the whole study with --resume to "
                        "collect the report")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the tables, plots and report from the runs on disk "
                        "(runs without metrics.json are reported as not run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs the study would make (and their steps), run nothing")


def run(args) -> int:
    from .study import run_study

    checkpoints = {}
    for item in args.checkpoint:
        if "=" not in item:
            raise ValueError(f"--checkpoint takes MODEL=PATH, got {item!r}")
        name, path = item.split("=", 1)
        checkpoints[name.strip()] = path.strip()
    overrides = {}
    if args.engine:
        overrides["engine"] = args.engine
    if args.seeds:
        overrides["seeds"] = args.seeds
    if args.dt:
        overrides["timesteps_fs"] = args.dt
    if args.threads:
        overrides["threads"] = args.threads
    if args.resume:
        overrides["resume"] = True
    if args.replicas:
        overrides["replicas"] = True
    if args.only:
        overrides["only"] = args.only
    if args.report_only:
        overrides["report_only"] = True
    if args.dry_run:
        return _dry_run(args.config, checkpoints, overrides)
    result = run_study(args.config, output=args.out, checkpoints=checkpoints,
                       progress=not args.no_progress, overrides=overrides)
    rows = result["rows"]
    failed = sum(r["status"] == "failed" for r in rows)
    skipped = sum(r["status"] in ("skipped", "error") for r in rows)
    print(f"geoff stability: {len(rows)} runs ({failed} failed, {skipped} not run)")
    if result["report"]:
        print(f"report: {result['report']}")
    else:
        print(f"runs written to {result['output']}; collect the report with --resume")
    return 0


def _dry_run(config, checkpoints, overrides) -> int:
    from pathlib import Path

    from .study_config import load_config, run_settings
    from .study_runs import plan

    cfg = load_config(config, checkpoints=checkpoints, overrides=overrides)
    runs = plan(cfg)
    steps = {}
    for run in runs:
        s = run_settings(cfg, run.model, run.ensemble, run.dt, run.seed)
        n, total = steps.get(run.model.name, (0, 0))
        steps[run.model.name] = (n + 1, total + s.steps)
    print(f"{cfg.name}: {len(runs)} runs")
    for m in [r.model for r in runs]:
        if m.name in steps:
            n, total = steps.pop(m.name)
            source = (m.reference or {}).get("name") or m.source()
            ok = "" if not m.checkpoint or Path(m.checkpoint).exists() else "  (MISSING)"
            print(f"  {m.name:24s} {n:4d} runs {total:8d} steps  {source}{ok}")
    return 0

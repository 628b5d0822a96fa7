"""Running a study: ``run_study(config)`` executes the plan run by run (or reads the runs a
previous pass left on disk), then hands the records to ``geoff.md.summary`` and
``geoff.md.report``. The config format and the outputs are described in
``geoff.md.stability``."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .analysis import analyse_run
from .engines import EngineUnavailable
from .recording import empty_thermo, read_thermo
from .report import write_report
from .runners import get_runner
from .settings import MDSettings
from .structures import build_structure
from .study_replicas import batchable, replica_result
from .study_config import ModelSpec, StudyConfig, label, load_config, run_settings
from .study_io import RESULT_COLUMNS, read_frames, write_csv, write_json
from .study_runs import Records, Run, RunRecord, plan
from .summary import model_table, rdf_errors, speedups, summarise


def run_study(config, output=None, checkpoints: Optional[Dict[str, str]] = None,
              progress: Optional[bool] = None, overrides: Optional[dict] = None,
              calculators: Optional[dict] = None) -> dict:
    """Run a study (YAML path, dict or ``StudyConfig``); returns ``{"report": path, "rows":
    [...], "output": dir}``. See ``geoff.md.stability`` for the config and the outputs.

    ``calculators={name: calculator}`` adds model rows run with ASE calculators (objects, or
    factories called with no arguments), or gives the calculator of a row the config names.
    """
    cfg = _with_calculators(load_config(config, checkpoints=checkpoints, overrides=overrides),
                            calculators or {})
    root = Path(output or cfg.output or Path("stability-output") / label(cfg.name))
    root.mkdir(parents=True, exist_ok=True)
    import torch

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_study(cfg, root, progress)
    finally:
        torch.set_num_threads(threads)


def _with_calculators(cfg: StudyConfig, calculators: dict) -> StudyConfig:
    """``cfg`` with calculator rows added or set (a copy: the caller's config stays as it was)."""
    if not calculators:
        return cfg
    models = []
    for spec in cfg.models:
        if spec.name in calculators:
            spec = dataclasses.replace(spec, calculator=calculators[spec.name], checkpoint=None,
                                       build=None)
        models.append(spec)
    known = {m.name for m in models}
    models += [ModelSpec(name=name, calculator=calc) for name, calc in calculators.items()
               if name not in known]
    return dataclasses.replace(cfg, models=models)


def _run_study(cfg: StudyConfig, root: Path, progress: Optional[bool]) -> dict:
    runs = plan(cfg)
    if cfg.only:
        known = {r.model.name for r in runs}
        unknown = sorted(set(cfg.only) - known)
        if unknown:
            raise ValueError(f"--only: no model {unknown} in the study; it has {sorted(known)}")
        runs = [r for r in runs if r.model.name in cfg.only]
        # this slice's per-model table first: it is cached on disk for the report, and a
        # slice stopped by a time limit has it all the same
        model_table(cfg, {}, {}, root, [m for m in cfg.models if m.name in cfg.only])
    bar = _progress(len(runs), cfg.progress if progress is None else progress)
    rows: List[dict] = []
    records: Records = {}
    potentials: Dict[str, object] = {}  # model name -> what the runner runs, loaded once
    batches: dict = {}  # replicas: true: a cell's results, run once for all its seeds
    try:
        for run in runs:
            bar.set_postfix_str(f"{run.model.name} | {run.system['name']} | "
                                f"{run.ensemble['name']} | dt={run.dt:g} fs | seed {run.seed}")
            record, engine, settings = _execute(cfg, run, root, potentials, bar, batches)
            records[run.key] = record
            rows.append(_row(run, settings, record.metrics, engine))
            bar.update(1)
    finally:
        bar.close()
    if cfg.only:
        # A slice of the study (e.g. one model per process or GPU): its runs are on disk; the
        # tables, plots and report come from a later pass over the whole study with --resume.
        return {"report": None, "output": str(root), "rows": rows, "summary": [], "models": []}
    return _collect(cfg, root, rows, records, potentials)


def _collect(cfg: StudyConfig, root: Path, rows: List[dict], records: Records,
             potentials: dict) -> dict:
    """Cross-run numbers, the tables, the report and ``study.json``."""
    rdf_errors(cfg, rows, records)
    speedups(cfg, rows)
    model_rows = model_table(cfg, records, potentials, root)
    summary = summarise(rows)
    write_csv(root / "results.csv", rows, RESULT_COLUMNS)
    write_csv(root / "summary.csv", summary, list(summary[0]) if summary else [])
    if model_rows:
        columns = list(dict.fromkeys(k for r in model_rows for k in r))
        write_csv(root / "models.csv", model_rows, columns)
    report = write_report(cfg, root, rows, summary, model_rows, records)
    write_json(root / "study.json", {"name": cfg.name, "rows": rows, "models": model_rows,
                                     "report": str(report)})
    return {"report": str(report), "output": str(root), "rows": rows, "summary": summary,
            "models": model_rows}


def _execute(cfg: StudyConfig, run: Run, root: Path, potentials: dict, bar,
             batches: Optional[dict] = None):
    """(record, engine, settings) of one run: read from disk when resuming, else run."""
    directory = run.directory(root)
    engine = run.model.engine or cfg.engine
    settings = None
    try:
        settings = run_settings(cfg, run.model, run.ensemble, run.dt, run.seed)
        metrics_path = directory / "metrics.json"
        if cfg.report_only and not metrics_path.exists():
            metrics = {"status": "skipped", "message": "not run (report only: no metrics.json)"}
            return RunRecord(run, metrics, empty_thermo(), directory), engine, settings
        if (cfg.resume or cfg.report_only) and metrics_path.exists():
            metrics = json.loads(metrics_path.read_text())
            frames = read_frames(directory) if run.is_reference else []
            return (RunRecord(run, metrics, read_thermo(directory / "thermo.csv"), directory,
                              frames), metrics.get("engine", engine), settings)
        result = _run_md(cfg, run, settings, engine, potentials, directory, batches)
        metrics = analyse_run(result, settings, cfg.analysis)
    except EngineUnavailable as exc:
        metrics = {"status": "skipped", "message": str(exc)}
        bar.write(f"skipped {run.model.name} on {engine}: {exc}")
        result = None
    except (ValueError, FileNotFoundError, TypeError) as exc:
        metrics = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
        bar.write(f"error in {run.model.name} / {run.system['name']}: {exc}")
        result = None
    metrics.update({"model": run.model.name, "forces": run.model.forces,
                    "system": run.system["name"], "ensemble": run.ensemble["name"],
                    "integrator": run.ensemble["ensemble"], "dt_fs": run.dt, "seed": run.seed,
                    "engine": engine, "is_reference": run.is_reference,
                    "settings": settings.to_dict() if settings is not None else None})
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "metrics.json", metrics)
    thermo = result.thermo if result is not None else read_thermo(directory / "thermo.csv")
    frames = result.frames if result is not None else []
    return RunRecord(run, metrics, thermo, directory, frames), engine, settings


def _run_md(cfg: StudyConfig, run: Run, settings: MDSettings, engine: str, potentials: dict,
            directory: Path, batches: Optional[dict] = None):
    if not run.model.is_geoff and run.model.forces != "conservative":
        raise EngineUnavailable(
            f"forces={run.model.forces!r} is geoff's own (a model with a direct head); "
            f"{run.model.source() or run.model.name} runs conservative forces only")
    if run.model.name not in potentials:
        potentials[run.model.name] = run.model.potential(cfg.dtype)
    potential = potentials[run.model.name]
    atoms = build_structure(run.system["structure"], cfg.base_dir)
    if cfg.replicas and batches is not None and batchable(run, settings, engine, potential):
        return replica_result(cfg, run, settings, potential, atoms, directory, batches)
    runner = get_runner(engine)
    reason = runner.unavailable(potential, settings)
    if reason:
        raise EngineUnavailable(reason)
    return runner.run(potential, atoms, settings, directory)


def _row(run: Run, settings: Optional[MDSettings], metrics: dict, engine: str) -> dict:
    row = {"model": run.model.name, "forces": run.model.forces, "system": run.system["name"],
           "ensemble": run.ensemble["name"], "integrator": run.ensemble["ensemble"],
           "dt_fs": run.dt, "seed": run.seed, "engine": engine}
    for k in RESULT_COLUMNS:
        if k not in row:
            value = metrics.get(k, "")
            # metrics.json stores NaN as null: read back, it is NaN again (as when it ran)
            row[k] = float("nan") if value is None else value
    if settings is not None and run.ensemble["ensemble"] != "nve":
        row["T_target"] = settings.temperature_K
    return row


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    if tqdm is None or not enabled:
        return _NoProgress()
    return tqdm(total=total, desc="stability", unit="run", file=sys.stderr, dynamic_ncols=True)


class _NoProgress:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def write(self, s):
        print(s, file=sys.stderr)

    def close(self):
        pass

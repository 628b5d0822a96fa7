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
    md: {log_every: 10, traj_every: 20}      # MDSettings defaults for every run
    failure: {max_force: 20, temperature_factor: 3}
    analysis: {equilibration_fraction: 0.2, rdf_r_max: 6.0, rdf_bins: 150,
               jacobian_structures: 2, force_timing: true}

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
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..checkpoint import atomic_write
from . import metrics as M
from .failure import FailureCriteria
from .integrators import canonical_ensemble
from .runners import EngineUnavailable, MDSettings, Reference, RunResult, get_runner

RESULT_COLUMNS = [
    "model", "forces", "system", "ensemble", "integrator", "dt_fs", "seed", "engine", "status",
    "n_atoms", "steps_requested", "steps_done", "simulated_ps", "failure_step",
    "failure_time_ps", "failure_reason", "drift_meV_atom_ps", "fluct_meV_atom",
    "max_dev_meV_atom", "T_target",
    "T_mean", "T_std", "T_error", "ke_ks", "rdf_error", "steps_per_s", "speedup", "message",
]


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

@dataclass
class ModelSpec:
    name: str
    forces: str = "conservative"
    checkpoint: Optional[str] = None
    build: Optional[dict] = None
    mts_steps: int = 4
    engine: Optional[str] = None
    reference: Optional[dict] = None  # a reference potential used as a model row
    baseline: Optional[str] = None  # model its speed-up is measured against

    def potential(self, dtype: str):
        if self.reference is not None:
            return Reference(self.reference["name"],
                             {k: v for k, v in self.reference.items() if k != "name"})
        if self.checkpoint:
            if not Path(self.checkpoint).exists():
                raise FileNotFoundError(
                    f"model {self.name!r}: no checkpoint at {self.checkpoint}; train one or "
                    f"pass --checkpoint {self.name}=PATH")
            return self.checkpoint
        if self.build:
            import torch

            from ..potentials import build_model

            b = dict(self.build)
            seed = b.pop("seed", 0)
            scale = b.pop("scale", None)
            torch.manual_seed(seed)
            model = build_model(b.pop("name"), species=b.pop("species"),
                                cutoff=b.pop("cutoff", 5.0),
                                force_head=b.pop("force_head", "conservative"), **b)
            if scale is not None:
                model.set_normalisation(torch.zeros(len(model.species)), scale)
            return model.to(getattr(torch, dtype)).eval()
        raise ValueError(f"model {self.name!r} needs a checkpoint (or build: for random weights)")


@dataclass
class StudyConfig:
    name: str
    models: List[ModelSpec]
    systems: List[dict]
    ensembles: List[dict]
    timesteps_fs: List[float]
    seeds: List[int]
    engine: str = "ase"
    dtype: str = "float64"
    device: str = "cpu"
    baseline: Optional[str] = None
    md: dict = field(default_factory=dict)
    failure: dict = field(default_factory=dict)
    analysis: dict = field(default_factory=dict)
    output: Optional[str] = None
    base_dir: Path = field(default_factory=Path.cwd)
    progress: bool = True
    resume: bool = False
    threads: Optional[int] = None  # torch intra-op threads (1 is fastest for small cells)
    only: Optional[List[str]] = None  # run only these models (names; "ref:emt" for a reference)
    report_only: bool = False  # run nothing: tables, plots and report from the runs on disk

    def analysis_option(self, key, default):
        return self.analysis.get(key, default)


_ENV = re.compile(r"\$\{([^}:]+)(?::-([^}]*))?\}")


def _expand(value):
    """``${VAR}`` / ``${VAR:-default}`` from the environment, recursively."""
    if isinstance(value, str):
        def sub(m):
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            raise ValueError(f"config uses ${{{m.group(1)}}} but it is not set; export it or "
                             "give the path with --checkpoint NAME=PATH")
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def _label(text: str) -> str:
    """A file-system-safe label."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("_") or "x"


def load_config(config, checkpoints: Optional[Dict[str, str]] = None,
                overrides: Optional[dict] = None) -> StudyConfig:
    """A ``StudyConfig`` from a YAML path or a dict (see the module docstring)."""
    base_dir = Path.cwd()
    if isinstance(config, StudyConfig):
        cfg = config
        if checkpoints:
            cfg = copy.deepcopy(cfg)
            for m in cfg.models:
                if m.name in checkpoints:
                    m.checkpoint = str(checkpoints[m.name])
        return cfg
    if isinstance(config, (str, os.PathLike)):
        import yaml

        path = Path(config)
        if not path.exists():
            raise FileNotFoundError(f"no study config at {path}")
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
        base_dir = path.resolve().parent
        raw.setdefault("name", path.stem)
    else:
        raw = copy.deepcopy(dict(config))
    overrides = dict(overrides or {})
    if "timesteps_fs" in overrides:  # --dt replaces every ensemble's own list too
        raw["ensembles"] = [{k: v for k, v in e.items() if k != "timesteps_fs"}
                            for e in raw.get("ensembles") or []] or None
    raw.update(overrides)
    # ${VAR} everywhere; models later, after --checkpoint has replaced their paths
    raw = {k: (v if k == "models" else _expand(v)) for k, v in raw.items()}
    checkpoints = dict(checkpoints or {})
    known = {m.get("name") for m in raw.get("models", [])}
    unknown = set(checkpoints) - known
    if unknown:
        raise ValueError(f"--checkpoint for unknown models {sorted(unknown)}; the config's "
                         f"models are {sorted(k for k in known if k)}")
    models = []
    for m in raw.get("models") or []:
        m = dict(m)
        if "name" not in m:
            raise ValueError(f"every model needs a name: {m}")
        if m["name"] in checkpoints:
            # given on the command line / in Python: relative to where the user is, not
            # to the config file
            m["checkpoint"] = str(Path(checkpoints[m["name"]]).expanduser().resolve())
            m.pop("build", None)
        m = _expand(m)
        if m.get("checkpoint"):
            p = Path(m["checkpoint"]).expanduser()
            m["checkpoint"] = str(p if p.is_absolute() else (base_dir / p))
        if isinstance(m.get("reference"), str):
            m["reference"] = {"name": m["reference"]}
        unknown_keys = set(m) - set(ModelSpec.__dataclass_fields__)
        if unknown_keys:
            raise ValueError(f"model {m['name']!r}: unknown keys {sorted(unknown_keys)}")
        models.append(ModelSpec(**m))
    if not models:
        raise ValueError("the study config lists no models")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be distinct: {names}")
    systems = []
    for s in raw.get("systems") or []:
        s = _expand(dict(s))
        if "name" not in s or "structure" not in s:
            raise ValueError(f"every system needs a name and a structure: {s}")
        if isinstance(s.get("reference"), str):
            s["reference"] = {"name": s["reference"]}
        systems.append(s)
    if not systems:
        raise ValueError("the study config lists no systems")
    ensembles = []
    for e in raw.get("ensembles") or [{"ensemble": "nve"}]:
        e = dict(e)
        e["ensemble"] = canonical_ensemble(e.get("ensemble", "nve"))
        e.setdefault("name", f"{e['ensemble']}-{e.get('temperature_K', 300):g}K")
        ensembles.append(e)
    for key in ("name",):
        if not raw.get(key):
            raise ValueError(f"the study config needs a {key}")
    dts = [float(x) for x in (raw.get("timesteps_fs") or [1.0])]
    seeds = [int(x) for x in (raw.get("seeds") or [0])]
    output = raw.get("output")
    if output:
        p = Path(_expand(output)).expanduser()
        output = str(p if p.is_absolute() else base_dir / p)
    return StudyConfig(
        name=str(raw["name"]), models=models, systems=systems, ensembles=ensembles,
        timesteps_fs=dts, seeds=seeds, engine=raw.get("engine", "ase"),
        dtype=raw.get("dtype", "float64"), device=raw.get("device", "cpu"),
        baseline=raw.get("baseline"), md=dict(raw.get("md") or {}),
        failure=dict(raw.get("failure") or {}), analysis=dict(raw.get("analysis") or {}),
        output=output, base_dir=base_dir, progress=bool(raw.get("progress", True)),
        resume=bool(raw.get("resume", False)),
        threads=int(raw["threads"]) if raw.get("threads") else None,
        only=[str(x) for x in raw["only"]] if raw.get("only") else None,
        report_only=bool(raw.get("report_only", False)))


def build_structure(spec: dict, base_dir: Path = Path(".")):
    """``ase.Atoms`` from a system's ``structure`` entry (file, bulk or molecule)."""
    import ase.io
    from ase.build import bulk, molecule

    spec = dict(spec)
    repeat = spec.pop("repeat", None)
    rattle = spec.pop("rattle", 0.0)
    rattle_seed = spec.pop("rattle_seed", 0)
    if "file" in spec:
        path = Path(spec.pop("file")).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.exists():
            raise FileNotFoundError(f"no structure file {path}")
        atoms = ase.io.read(path, index=spec.pop("index", 0))
    elif "bulk" in spec:
        atoms = bulk(spec.pop("bulk"), **spec)
    elif "molecule" in spec:
        vacuum = spec.pop("vacuum", 5.0)
        atoms = molecule(spec.pop("molecule"), **spec)
        atoms.center(vacuum=vacuum)
        atoms.pbc = False
    else:
        raise ValueError(f"a structure needs file:, bulk: or molecule:, got {spec}")
    if repeat:
        atoms = atoms * tuple(repeat)
    if rattle:
        atoms.rattle(stdev=float(rattle), seed=int(rattle_seed))
    atoms.calc = None
    return atoms


# --------------------------------------------------------------------------------------------
# Per-run analysis
# --------------------------------------------------------------------------------------------

def _settings(cfg: StudyConfig, model: ModelSpec, ensemble: dict, dt: float, seed: int):
    e = {k: v for k, v in ensemble.items() if k not in ("name", "timesteps_fs")}
    time_ps = e.pop("time_ps", None)
    d = {**cfg.md, **e, "timestep_fs": dt, "seed": seed, "dtype": cfg.dtype,
         "device": cfg.device, "forces": model.forces, "mts_steps": model.mts_steps}
    if time_ps is not None:
        d["steps"] = int(round(float(time_ps) * 1000.0 / dt))
    d["failure"] = FailureCriteria.from_dict({**cfg.failure, **(e.get("failure") or {})})
    return MDSettings.from_dict(d)


def analyse_run(result: RunResult, settings: MDSettings, analysis: dict) -> dict:
    """Metrics of one run (see ``geoff.md.metrics`` for the definitions)."""
    th = result.thermo
    n = result.n_atoms
    eq = float(analysis.get("equilibration_fraction", 0.2))
    out = {"n_atoms": n, "n_dof": result.n_dof, "steps_requested": result.steps_requested,
           "steps_done": result.steps_done,
           "simulated_ps": result.steps_done * settings.timestep_fs / 1000.0,
           "steps_per_s": result.steps_per_s, "wall_s": result.wall_s,
           "status": "failed" if result.failed else "ok"}
    if result.failure is not None:
        f = result.failure
        out.update(failure_step=f.step, failure_time_ps=f.step * settings.timestep_fs / 1000.0,
                   failure_reason=f.reason, message=f.message)
    t, cons = th["time_ps"], th["conserved"]
    out["drift_meV_atom_ps"] = M.energy_drift(t, cons, n) if len(t) >= 3 else float("nan")
    out["fluct_meV_atom"] = M.energy_fluctuation(t, cons, n) if len(t) >= 3 else float("nan")
    out["max_dev_meV_atom"] = M.max_deviation(cons, n) if len(t) else float("nan")
    start = int(len(t) * eq)
    temps = th["temperature"][start:]
    target = settings.temperature_K if settings.ensemble != "nve" else None
    out.update(M.temperature_stats(temps, target))
    if target is None:
        out["T_target"] = float("nan")
        out["T_error"] = float("nan")
    if settings.ensemble != "nve" and len(temps) >= 5:
        ks = M.kinetic_energy_ks(th["ekin"][start:], result.n_dof, settings.temperature_K)
        out["ke_ks"] = ks["ks"]
        out.update({k: v for k, v in ks.items() if k != "ks"})
    frames = result.frames[int(len(result.frames) * eq):]
    if frames:
        r, g = M.rdf(frames, r_max=float(analysis.get("rdf_r_max", 6.0)),
                     n_bins=int(analysis.get("rdf_bins", 150)))
        out["rdf_r"] = r.tolist()
        out["rdf_g"] = g.tolist()
        out["rdf_frames"] = len(frames)
    return out


def _json_ready(d):
    if isinstance(d, dict):
        return {k: _json_ready(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_json_ready(v) for v in d]
    if isinstance(d, (np.floating, float)):
        return None if not np.isfinite(d) else float(d)
    if isinstance(d, np.integer):
        return int(d)
    if isinstance(d, Path):
        return str(d)
    return d


def write_json(path, data) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(
        json.dumps(_json_ready(data), indent=1, sort_keys=True)))


def empty_thermo() -> Dict[str, np.ndarray]:
    from .runners import THERMO_COLUMNS

    return {k: np.zeros(0) for k in THERMO_COLUMNS}


def read_thermo(path) -> Dict[str, np.ndarray]:
    from .runners import THERMO_COLUMNS

    path = Path(path)
    if not path.exists():
        return empty_thermo()
    arr = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64, ndmin=1)
    return {k: np.atleast_1d(arr[k]) for k in THERMO_COLUMNS} if arr.size else empty_thermo()


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    model: ModelSpec
    system: dict
    ensemble: dict
    dt: float
    seed: int
    is_reference: bool = False

    @property
    def key(self):
        return (self.model.name, self.system["name"], self.ensemble["name"], self.dt, self.seed)

    def directory(self, root: Path) -> Path:
        return (root / "runs" / _label(self.model.name) / _label(self.system["name"]) /
                _label(self.ensemble["name"]) / f"dt{self.dt:g}fs" / f"seed{self.seed}")


def _reference_spec(system: dict) -> Optional[ModelSpec]:
    ref = system.get("reference")
    if not ref:
        return None
    return ModelSpec(name=f"ref:{ref['name']}", forces="conservative", reference=ref,
                     engine="ase")


def ensemble_timesteps(cfg: StudyConfig, ensemble: dict) -> List[float]:
    """The time steps of an ensemble: its own ``timesteps_fs`` or the study's."""
    return [float(x) for x in ensemble.get("timesteps_fs") or cfg.timesteps_fs]


def plan(cfg: StudyConfig) -> List[Run]:
    """Every run of the study: references first (their RDFs are needed), then the matrix,
    one seed after the other."""
    runs = []
    for system in cfg.systems:
        ref = _reference_spec(system)
        if ref is not None and cfg.analysis_option("reference_runs", True):
            for ensemble in cfg.ensembles:
                dt_ref = min(ensemble_timesteps(cfg, ensemble))
                runs.append(Run(ref, system, ensemble, dt_ref, cfg.seeds[0], is_reference=True))
    # seeds outermost: a study stopped early (time limit, Ctrl-C) has every model, ensemble
    # and time step for its first seeds rather than a few models complete
    for seed in cfg.seeds:
        for model in cfg.models:
            for system in cfg.systems:
                for ensemble in cfg.ensembles:
                    for dt in ensemble_timesteps(cfg, ensemble):
                        runs.append(Run(model, system, ensemble, dt, seed))
    return runs


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    if tqdm is None or not enabled:
        class _Null:
            def update(self, n=1):
                pass

            def set_postfix_str(self, s):
                pass

            def write(self, s):
                print(s, file=sys.stderr)

            def close(self):
                pass
        return _Null()
    return tqdm(total=total, desc="stability", unit="run", file=sys.stderr, dynamic_ncols=True)


def _row(run: Run, settings: Optional[MDSettings], metrics: dict, engine: str) -> dict:
    row = {"model": run.model.name, "forces": run.model.forces, "system": run.system["name"],
           "ensemble": run.ensemble["name"], "integrator": run.ensemble["ensemble"],
           "dt_fs": run.dt, "seed": run.seed, "engine": engine}
    for k in RESULT_COLUMNS:
        if k not in row:
            row[k] = metrics.get(k, "")
    if settings is not None and run.ensemble["ensemble"] != "nve":
        row["T_target"] = settings.temperature_K
    return row


def run_study(config, output=None, checkpoints: Optional[Dict[str, str]] = None,
              progress: Optional[bool] = None, overrides: Optional[dict] = None) -> dict:
    """Run a study (YAML path, dict or ``StudyConfig``); returns ``{"report": path, "rows":
    [...], "output": dir}``. See the module docstring for the config and the outputs."""
    cfg = load_config(config, checkpoints=checkpoints, overrides=overrides)
    root = Path(output or cfg.output or Path("stability-output") / _label(cfg.name))
    root.mkdir(parents=True, exist_ok=True)
    import torch

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_study(cfg, root, progress)
    finally:
        torch.set_num_threads(threads)


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
        _model_table(cfg, {}, {}, root, [m for m in cfg.models if m.name in cfg.only])
    bar = _progress(len(runs), cfg.progress if progress is None else progress)
    rows: List[dict] = []
    records: Dict[tuple, dict] = {}  # run key -> {"metrics", "thermo", "dir", "run"}
    potentials: Dict[str, object] = {}
    try:
        for run in runs:
            label = f"{run.model.name} | {run.system['name']} | {run.ensemble['name']} | " \
                    f"dt={run.dt:g} fs | seed {run.seed}"
            bar.set_postfix_str(label)
            rows.append(_execute(cfg, run, root, potentials, records, bar))
            bar.update(1)
    finally:
        bar.close()
    if cfg.only:
        # A slice of the study (e.g. one model per process or GPU): its runs are on disk; the
        # tables, plots and report come from a later pass over the whole study with --resume.
        return {"report": None, "output": str(root), "rows": rows, "summary": [], "models": []}
    _rdf_errors(cfg, rows, records, root)
    _speedups(cfg, rows)
    model_rows = _model_table(cfg, records, potentials, root)
    summary = summarise(rows)
    _write_csv(root / "results.csv", rows, RESULT_COLUMNS)
    _write_csv(root / "summary.csv", summary, list(summary[0]) if summary else [])
    if model_rows:
        columns = list(dict.fromkeys(k for r in model_rows for k in r))
        _write_csv(root / "models.csv", model_rows, columns)
    from .report import write_report

    report = write_report(cfg, root, rows, summary, model_rows, records)
    write_json(root / "study.json", {"name": cfg.name, "rows": rows, "models": model_rows,
                                     "report": str(report)})
    return {"report": str(report), "output": str(root), "rows": rows, "summary": summary,
            "models": model_rows}


def _execute(cfg: StudyConfig, run: Run, root: Path, potentials, records, bar) -> dict:
    directory = run.directory(root)
    engine = run.model.engine or cfg.engine
    settings = None
    try:
        settings = _settings(cfg, run.model, run.ensemble, run.dt, run.seed)
        metrics_path = directory / "metrics.json"
        if cfg.report_only and not metrics_path.exists():
            metrics = {"status": "skipped", "message": "not run (report only: no metrics.json)"}
            records[run.key] = {"metrics": metrics, "thermo": empty_thermo(), "dir": directory,
                                "run": run, "frames": []}
            return _row(run, settings, metrics, engine)
        if (cfg.resume or cfg.report_only) and metrics_path.exists():
            metrics = json.loads(metrics_path.read_text())
            records[run.key] = {"metrics": metrics, "thermo": read_thermo(
                directory / "thermo.csv"), "dir": directory, "run": run,
                "frames": _read_frames(directory) if run.is_reference else []}
            return _row(run, settings, metrics, metrics.get("engine", engine))
        if run.model.name not in potentials:
            potentials[run.model.name] = run.model.potential(cfg.dtype)
        potential = potentials[run.model.name]
        atoms = build_structure(run.system["structure"], cfg.base_dir)
        runner = get_runner(engine)
        reason = runner.unavailable(potential, settings)
        if reason:
            raise EngineUnavailable(reason)
        result = runner.run(potential, atoms, settings, directory)
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
    records[run.key] = {"metrics": metrics, "thermo": result.thermo if result is not None
                        else read_thermo(directory / "thermo.csv"), "dir": directory, "run": run,
                        "frames": result.frames if result is not None else []}
    return _row(run, settings, metrics, engine)


def _read_frames(directory: Path) -> list:
    """The saved trajectory of a finished run (for the Jacobian samples of a resumed study)."""
    import ase.io

    for name in ("trajectory.extxyz", "trajectory.traj"):
        if (directory / name).exists():
            try:
                return ase.io.read(directory / name, ":")
            except Exception:  # an unreadable trajectory only costs Jacobian samples
                return []
    return []


def _reference_record(records, system: str, ensemble: str) -> Optional[dict]:
    for rec in records.values():
        r = rec["run"]
        if r.is_reference and r.system["name"] == system and r.ensemble["name"] == ensemble:
            return rec
    return None


def _rdf_errors(cfg, rows, records, root) -> None:
    """RDF error of every run against its system's reference at the same ensemble."""
    r_max = float(cfg.analysis_option("rdf_r_max", 6.0))
    for row in rows:
        key = (row["model"], row["system"], row["ensemble"], row["dt_fs"], row["seed"])
        rec = records.get(key)
        ref = _reference_record(records, row["system"], row["ensemble"])
        if rec is None or ref is None or rec is ref:
            continue
        g, g_ref = rec["metrics"].get("rdf_g"), ref["metrics"].get("rdf_g")
        if g is None or g_ref is None or len(g) != len(g_ref):
            continue
        err = M.rdf_error(g, g_ref, r_max)
        row["rdf_error"] = err
        rec["metrics"]["rdf_error"] = err
        rec["metrics"]["rdf_reference"] = ref["run"].model.name
        write_json(rec["dir"] / "metrics.json", rec["metrics"])


def _baseline(cfg: StudyConfig, model: Optional[str] = None) -> Optional[str]:
    """The model that ``model``'s speed-up is measured against: its own ``baseline``, the
    study's, or the first conservative model."""
    spec = next((m for m in cfg.models if m.name == model), None)
    if spec is not None and spec.baseline:
        return spec.baseline
    if cfg.baseline:
        return cfg.baseline
    for m in cfg.models:
        if m.forces == "conservative" and m.reference is None:
            return m.name
    return None


def _speedups(cfg, rows) -> None:
    index = {(r["model"], r["system"], r["ensemble"], r["dt_fs"], r["seed"]): r for r in rows}
    for r in rows:
        if r["model"].startswith("ref:"):
            continue  # a reference potential is a different code; no speed-up to report
        base = _baseline(cfg, r["model"])
        b = index.get((base, r["system"], r["ensemble"], r["dt_fs"], r["seed"]))
        if b is None or not isinstance(r["steps_per_s"], float) or \
                not isinstance(b["steps_per_s"], float):
            continue
        r["speedup"] = M.speedup(r["steps_per_s"], b["steps_per_s"])


def _model_table(cfg: StudyConfig, records, potentials, root,
                 models: Optional[List["ModelSpec"]] = None) -> List[dict]:
    """Per model and system: Jacobian asymmetry lambda and the force-call time.

    Each model's rows are cached in ``root/models/<model>.json``; a resumed (or report-only)
    study reuses them, so a study split with ``only`` computes them once, in the process that
    runs the model."""
    out = []
    times: Dict[tuple, float] = {}
    for model in models if models is not None else cfg.models:
        if model.reference is not None:
            continue
        if models is None and not any(rec["run"].model.name == model.name and
                                      rec["metrics"].get("status") != "skipped"
                                      for rec in records.values()):
            continue
        cache = root / "models" / f"{_label(model.name)}.json"
        if (cfg.resume or cfg.report_only) and cache.exists():
            rows = json.loads(cache.read_text())
        elif cfg.report_only:
            continue
        else:
            rows = _model_rows(cfg, model, potentials, records, root)
            if rows is None:
                continue
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, rows)
        for row in rows:
            if "force_call_ms" in row:
                times[(row["model"], row["system"])] = 1e-3 * row["force_call_ms"]
        out += rows
    for row in out:
        b = times.get((_baseline(cfg, row["model"]), row["system"]))
        t = times.get((row["model"], row["system"]))
        if b and t:
            row["force_call_speedup"] = b / t
    return out


def _model_rows(cfg: StudyConfig, model, potentials, records, root) -> Optional[List[dict]]:
    import torch

    n_struct = int(cfg.analysis_option("jacobian_structures", 2))
    timing = bool(cfg.analysis_option("force_timing", True))
    max_atoms = int(cfg.analysis_option("jacobian_max_atoms", 256))
    pot = potentials.get(model.name)
    if pot is None:  # every run of it was resumed from disk, or none has run yet
        try:
            pot = potentials[model.name] = model.potential(cfg.dtype)
        except (ValueError, FileNotFoundError) as exc:
            print(f"geoff stability: no model table row for {model.name}: {exc}")
            return None
    net = pot if isinstance(pot, torch.nn.Module) else None
    if net is None:
        from ..checkpoint import load

        net = load(pot)
    net = net.to(dtype=getattr(torch, cfg.dtype), device=cfg.device)
    forces = "direct" if model.forces in ("direct", "mts") else "conservative"
    rows = []
    for system in cfg.systems:
        atoms0 = build_structure(system["structure"], cfg.base_dir)
        # samples: a rattled crystal, then frames of the reference trajectory (this process's,
        # else on disk), else more rattled crystals
        samples = [atoms0.copy()]
        samples[0].rattle(stdev=0.05, seed=1)
        frames = []
        for rec in records.values():
            if rec["run"].is_reference and rec["run"].system["name"] == system["name"]:
                frames = rec.get("frames") or []
                break
        if not frames:
            for run in plan(cfg):
                if run.is_reference and run.system["name"] == system["name"] and \
                        (run.directory(root) / "metrics.json").exists():
                    frames = _read_frames(run.directory(root))
                    break
        for frame in frames[::-1]:
            if len(samples) >= n_struct:
                break
            samples.append(frame)
        while len(samples) < n_struct:
            extra = atoms0.copy()
            extra.rattle(stdev=0.05 * (len(samples) + 1), seed=len(samples) + 1)
            samples.append(extra)
        row = {"model": model.name, "forces": model.forces, "force_head": net.force_head,
               "system": system["name"], "n_atoms": len(atoms0)}
        if n_struct > 0 and len(atoms0) <= max_atoms:
            lam = [M.jacobian_asymmetry(net, a, forces=forces) for a in samples[:n_struct]]
            row["jacobian_asymmetry"] = float(np.mean(lam))
            row["jacobian_structures"] = len(lam)
        if timing:
            t = M.time_force_call(net, atoms0, forces=forces)
            row["force_call_ms"] = 1e3 * t
            if net.force_head == "both":
                other = "conservative" if forces == "direct" else "direct"
                t2 = M.time_force_call(net, atoms0, forces=other)
                row[f"{other}_call_ms_same_model"] = 1e3 * t2
                cons, direct = (t2, t) if forces == "direct" else (t, t2)
                row["direct_speedup_same_model"] = cons / direct
        rows.append(row)
    return rows


def summarise(rows: List[dict]) -> List[dict]:
    """Mean and standard deviation over seeds per model x system x ensemble x dt."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["system"], r["ensemble"], r["dt_fs"]), []).append(r)
    out = []
    numeric = ["drift_meV_atom_ps", "fluct_meV_atom", "max_dev_meV_atom", "T_mean", "T_error",
               "ke_ks",
               "rdf_error", "steps_per_s", "speedup"]
    for (model, system, ensemble, dt), rs in groups.items():
        s = {"model": model, "forces": rs[0]["forces"], "system": system, "ensemble": ensemble,
             "dt_fs": dt, "seeds": len(rs),
             "ran": sum(r["status"] in ("ok", "failed") for r in rs),
             "failed": sum(r["status"] == "failed" for r in rs)}
        for k in numeric:
            vals = np.array([r[k] for r in rs if isinstance(r.get(k), (int, float))
                             and np.isfinite(r[k])], dtype=np.float64)
            s[k] = float(vals.mean()) if len(vals) else float("nan")
            s[k + "_std"] = float(vals.std()) if len(vals) > 1 else float("nan")
        # time to failure: the failure time of failed seeds; survived seeds count with the
        # full simulated time (a lower bound, flagged by the "failed" count)
        ttf = [r["failure_time_ps"] if r["status"] == "failed" else r["simulated_ps"]
               for r in rs if r["status"] in ("ok", "failed")]
        s["time_to_failure_ps"] = float(np.mean(ttf)) if ttf else float("nan")
        s["simulated_ps"] = float(np.mean([r["simulated_ps"] for r in rs
                                           if isinstance(r.get("simulated_ps"), float)]
                                          or [float("nan")]))
        out.append(s)
    return out


def _write_csv(path: Path, rows: List[dict], columns: List[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return "" if not np.isfinite(v) else f"{v:.6g}"
        return v

    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: fmt(r.get(k, "")) for k in columns})

    atomic_write(path, write)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)

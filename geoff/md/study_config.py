"""The study-config schema: ``load_config(yaml_path | dict)`` -> ``StudyConfig``.

The format is documented in ``geoff.md.stability``. A model row is one of

* a geoff model: ``checkpoint:`` (or ``build:`` for random weights), integrated with its
  ``forces``: ``conservative``, ``direct`` or ``mts`` (multiple time stepping);
* a reference potential of ``geoff.md.references``: ``reference: emt`` (or ``{name: eam,
  file: ...}``);
* any ASE calculator: ``calculator: module:factory`` with ``kwargs: {...}`` for the factory
  (e.g. ``ase.calculators.emt:EMT``), or a calculator object given to
  ``run_study(calculators={name: object})``.

Direct forces and multiple time stepping need a geoff model with a direct head; other rows
run conservative forces.
"""
from __future__ import annotations

import copy
import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .failure import FailureCriteria
from .integrators import canonical_ensemble
from .settings import MDSettings, Reference


@dataclass
class ModelSpec:
    name: str
    forces: str = "conservative"
    checkpoint: Optional[str] = None
    build: Optional[dict] = None
    mts_steps: int = 4
    engine: Optional[str] = None
    reference: Optional[dict] = None  # a reference potential used as a model row
    calculator: object = None  # "module:factory", a factory or an ASE calculator object
    kwargs: Optional[dict] = None  # keyword arguments of the calculator factory
    baseline: Optional[str] = None  # model its speed-up is measured against

    @property
    def is_geoff(self) -> bool:
        """A geoff model (checkpoint or built), not a reference or a foreign calculator."""
        return self.reference is None and self.calculator is None

    def source(self) -> str:
        """Where the model comes from, for the report."""
        if self.calculator is not None:
            if isinstance(self.calculator, str):
                return self.calculator
            return f"{type(self.calculator).__name__} object"
        return self.checkpoint or (f"random weights ({self.build.get('name')})"
                                   if self.build else "")

    def potential(self, dtype: str):
        """What ``geoff.md.runners`` runs: a checkpoint path, an ``EnergyModel``, a
        ``Reference`` or an ASE calculator."""
        if self.reference is not None:
            return Reference(self.reference["name"],
                             {k: v for k, v in self.reference.items() if k != "name"})
        if self.calculator is not None:
            return self._calculator()
        if self.checkpoint:
            if not Path(self.checkpoint).exists():
                raise FileNotFoundError(
                    f"model {self.name!r}: no checkpoint at {self.checkpoint}; train one or "
                    f"pass --checkpoint {self.name}=PATH")
            return self.checkpoint
        if self.build:
            return self._built(dtype)
        raise ValueError(f"model {self.name!r} needs a checkpoint, a calculator (or build: for "
                         "random weights)")

    def _calculator(self):
        from ase.calculators.calculator import BaseCalculator

        factory = self.calculator
        if isinstance(factory, BaseCalculator):
            return factory
        if isinstance(factory, str):
            factory = import_factory(factory, self.name)
        if not callable(factory):
            raise TypeError(f"model {self.name!r}: calculator must be 'module:factory', a "
                            f"factory or an ASE calculator, not {type(factory).__name__}")
        return factory(**(self.kwargs or {}))

    def _built(self, dtype: str):
        import torch

        from ..inference import torch_dtype
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
        return model.to(torch_dtype(dtype)).eval()


def import_factory(spec: str, model: str = "?"):
    """``"package.module:name"`` -> the object ``name`` of that module."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"model {model!r}: calculator {spec!r} must read 'module:factory', "
                         "e.g. 'ase.calculators.emt:EMT'")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ValueError(f"model {model!r}: cannot import {module} ({exc}); install it, or run "
                         "the study in an environment that has it") from None
    except AttributeError:
        raise ValueError(f"model {model!r}: {module} has no {name!r}") from None


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
    replicas: bool = False  # the seeds of a cell as one batched run (geoff.md.study_replicas)

    def analysis_option(self, key, default):
        return self.analysis.get(key, default)

    def model(self, name: str) -> Optional[ModelSpec]:
        return next((m for m in self.models if m.name == name), None)


def label(text: str) -> str:
    """A file-system-safe label."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("_") or "x"


def ensemble_timesteps(cfg: StudyConfig, ensemble: dict) -> List[float]:
    """The time steps of an ensemble: its own ``timesteps_fs`` or the study's."""
    return [float(x) for x in ensemble.get("timesteps_fs") or cfg.timesteps_fs]


def baseline_of(cfg: StudyConfig, model: Optional[str] = None) -> Optional[str]:
    """The model that ``model``'s speed-up is measured against: its own ``baseline``, the
    study's, or the first conservative geoff model."""
    spec = cfg.model(model) if model is not None else None
    if spec is not None and spec.baseline:
        return spec.baseline
    if cfg.baseline:
        return cfg.baseline
    for m in cfg.models:
        if m.forces == "conservative" and m.is_geoff:
            return m.name
    return None


# ``md:`` keys that configure the batched force call (``BatchedForces``), not ``MDSettings``:
# ``cuda_graphs: auto|true|false`` (captured CUDA graphs, where geoff has them)
BATCH_OPTIONS = ("cuda_graphs",)


def batch_options(cfg: StudyConfig) -> dict:
    """The study's ``md:`` keys for the batched force call (``BATCH_OPTIONS``)."""
    return {k: cfg.md[k] for k in BATCH_OPTIONS if k in cfg.md}


def run_settings(cfg: StudyConfig, model: ModelSpec, ensemble: dict, dt: float,
                 seed: int) -> MDSettings:
    """The ``MDSettings`` of one run: the study's ``md``, the ensemble's own keys, dt, seed."""
    e = {k: v for k, v in ensemble.items() if k not in ("name", "timesteps_fs")}
    time_ps = e.pop("time_ps", None)
    md = {k: v for k, v in cfg.md.items() if k not in BATCH_OPTIONS}
    d = {**md, **e, "timestep_fs": dt, "seed": seed, "dtype": cfg.dtype,
         "device": cfg.device, "forces": model.forces, "mts_steps": model.mts_steps}
    if time_ps is not None:
        d["steps"] = int(round(float(time_ps) * 1000.0 / dt))
    if not model.is_geoff or (model.engine or cfg.engine) != "ase":
        # md.calculator: the knobs of geoff's ASE calculator; a reference, a foreign
        # calculator and LAMMPS (which runs the exported model) have none
        d.pop("calculator", None)
    d["failure"] = FailureCriteria.from_dict({**cfg.failure, **(e.get("failure") or {})})
    return MDSettings.from_dict(d)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([^}:]+)(?::-([^}]*))?\}")


def expand(value):
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
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


def load_config(config, checkpoints: Optional[Dict[str, str]] = None,
                overrides: Optional[dict] = None) -> StudyConfig:
    """A ``StudyConfig`` from a YAML path or a dict (see ``geoff.md.stability``)."""
    if isinstance(config, StudyConfig):
        cfg = config
        if checkpoints:
            cfg = copy.deepcopy(cfg)
            for m in cfg.models:
                if m.name in checkpoints:
                    m.checkpoint = str(checkpoints[m.name])
        return cfg
    raw, base_dir = _read(config)
    overrides = dict(overrides or {})
    if "timesteps_fs" in overrides:  # --dt replaces every ensemble's own list too
        raw["ensembles"] = [{k: v for k, v in e.items() if k != "timesteps_fs"}
                            for e in raw.get("ensembles") or []] or None
    raw.update(overrides)
    # ${VAR} everywhere; models later, after --checkpoint has replaced their paths
    raw = {k: (v if k == "models" else expand(v)) for k, v in raw.items()}
    models = _models(raw, dict(checkpoints or {}), base_dir)
    systems, ensembles = _systems(raw), _ensembles(raw)
    if not raw.get("name"):
        raise ValueError("the study config needs a name")
    output = raw.get("output")
    if output:
        p = Path(expand(output)).expanduser()
        output = str(p if p.is_absolute() else base_dir / p)
    return StudyConfig(
        name=str(raw["name"]), models=models, systems=systems, ensembles=ensembles,
        timesteps_fs=[float(x) for x in (raw.get("timesteps_fs") or [1.0])],
        seeds=[int(x) for x in (raw.get("seeds") or [0])], engine=raw.get("engine", "ase"),
        dtype=raw.get("dtype", "float64"), device=raw.get("device", "cpu"),
        baseline=raw.get("baseline"), md=dict(raw.get("md") or {}),
        failure=dict(raw.get("failure") or {}), analysis=dict(raw.get("analysis") or {}),
        output=output, base_dir=base_dir, progress=bool(raw.get("progress", True)),
        resume=bool(raw.get("resume", False)),
        threads=int(raw["threads"]) if raw.get("threads") else None,
        only=[str(x) for x in raw["only"]] if raw.get("only") else None,
        report_only=bool(raw.get("report_only", False)),
        replicas=bool(raw.get("replicas", False)))


def _read(config):
    """(raw dict, the folder relative paths are read from) of a YAML path or a dict."""
    if isinstance(config, (str, os.PathLike)):
        import yaml

        path = Path(config)
        if not path.exists():
            raise FileNotFoundError(f"no study config at {path}")
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
        raw.setdefault("name", path.stem)
        return raw, path.resolve().parent
    raw = dict(config)
    # model rows shallow (a calculator object in one is used, not copied); the rest deep
    models = [dict(m) for m in raw.pop("models", None) or []]
    raw = copy.deepcopy(raw)
    raw["models"] = models
    return raw, Path.cwd()


def _models(raw: dict, checkpoints: Dict[str, str], base_dir: Path) -> List[ModelSpec]:
    known = {m.get("name") for m in raw.get("models") or []}
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
        m = expand(m)
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
    return models


def _systems(raw: dict) -> List[dict]:
    systems = []
    for s in raw.get("systems") or []:
        s = expand(dict(s))
        if "name" not in s or "structure" not in s:
            raise ValueError(f"every system needs a name and a structure: {s}")
        if isinstance(s.get("reference"), str):
            s["reference"] = {"name": s["reference"]}
        systems.append(s)
    if not systems:
        raise ValueError("the study config lists no systems")
    return systems


def _ensembles(raw: dict) -> List[dict]:
    ensembles = []
    for e in raw.get("ensembles") or [{"ensemble": "nve"}]:
        e = dict(e)
        e["ensemble"] = canonical_ensemble(e.get("ensemble", "nve"))
        e.setdefault("name", f"{e['ensemble']}-{e.get('temperature_K', 300):g}K")
        ensembles.append(e)
    return ensembles

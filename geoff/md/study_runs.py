"""The runs of a study: what each one is (``Run``, named by a ``RunKey``), what it left
(``RunRecord``), and ``plan(cfg)``, the list of them in the order they run."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional

import numpy as np

from .study_config import ModelSpec, StudyConfig, ensemble_timesteps, label


class RunKey(NamedTuple):
    """One cell of the study's matrix; also the key of a results row."""

    model: str
    system: str
    ensemble: str
    dt_fs: float
    seed: int

    @classmethod
    def of_row(cls, row: dict) -> "RunKey":
        return cls(row["model"], row["system"], row["ensemble"], row["dt_fs"], row["seed"])


@dataclass
class Run:
    model: ModelSpec
    system: dict
    ensemble: dict
    dt: float
    seed: int
    is_reference: bool = False

    @property
    def key(self) -> RunKey:
        return RunKey(self.model.name, self.system["name"], self.ensemble["name"], self.dt,
                      self.seed)

    def directory(self, root: Path) -> Path:
        return (root / "runs" / label(self.model.name) / label(self.system["name"]) /
                label(self.ensemble["name"]) / f"dt{self.dt:g}fs" / f"seed{self.seed}")


@dataclass
class RunRecord:
    """What a run left: its metrics (as in ``metrics.json``), thermo log (``THERMO_COLUMNS``
    arrays), folder, and the sampled frames (kept for reference runs' Jacobian samples)."""

    run: Run
    metrics: dict
    thermo: Dict[str, np.ndarray]
    directory: Path
    frames: list = field(default_factory=list)


Records = Dict[RunKey, RunRecord]


def reference_spec(system: dict) -> Optional[ModelSpec]:
    """The model row of a system's reference potential (``ref:<name>``), or None."""
    ref = system.get("reference")
    if not ref:
        return None
    return ModelSpec(name=f"ref:{ref['name']}", forces="conservative", reference=ref,
                     engine="ase")


def plan(cfg: StudyConfig) -> List[Run]:
    """Every run of the study: references first (their RDFs are needed), then the matrix,
    one seed after the other."""
    runs = []
    for system in cfg.systems:
        ref = reference_spec(system)
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


def reference_record(records: Records, system: str, ensemble: str) -> Optional[RunRecord]:
    """The reference potential's run of ``system`` at ``ensemble``, if it ran."""
    return next(iter(reference_records(records, system, ensemble)), None)


def reference_records(records: Records, system: str,
                      ensemble: Optional[str] = None) -> List[RunRecord]:
    return [r for r in records.values() if r.run.is_reference and r.run.system["name"] == system
            and (ensemble is None or r.run.ensemble["name"] == ensemble)]


def first_seed_record(records: Records, model: str, system: str, ensemble: str,
                      dt: float) -> List[RunRecord]:
    """The run of the smallest seed in one cell of the matrix (a list of 0 or 1)."""
    recs: Iterable[RunRecord] = (r for k, r in records.items()
                                 if k[:4] == (model, system, ensemble, dt))
    return sorted(recs, key=lambda r: r.run.seed)[:1]

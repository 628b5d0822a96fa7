"""A study's seeds as batched replicas (``replicas: true`` in the study YAML).

The runs of one cell of the matrix (model, system, ensemble, time step) differ only in their
seed, so they are one system: the first of them that runs advances all the seeds at once
(``geoff.md.replicas.run_replicas``, each seed writing into its own run folder), and the
others pick up their ``RunResult`` from the cache. Each replica equals its single run, so the
study's numbers do not change; only the wall time does (a replica's ``steps_per_s`` is the
batch's steps per second of integration: all its replicas advance together).

Cells that cannot be batched (LAMMPS, multiple time stepping, reference calculators) run one
seed at a time as before.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from .engines import model_or_calculator
from .settings import MDSettings


def batchable(run, settings: MDSettings, engine: str, potential) -> bool:
    if engine != "ase" or settings.forces == "mts" or run.is_reference:
        return False
    try:
        model, _ = model_or_calculator(potential)
    except TypeError:
        return False
    return model is not None


def replica_result(cfg, run, settings: MDSettings, potential, atoms, directory: Path,
                   cache: Dict[tuple, dict]):
    """This run's ``RunResult`` (its folder ``directory``), from one batched run of every seed
    of its cell."""
    from .replicas import run_replicas
    from .study_config import run_settings

    cell = run.key[:4]
    if cell not in cache or run.seed not in cache[cell]:
        seeds = list(cfg.seeds)
        plans = [run_settings(cfg, run.model, run.ensemble, run.dt, s) for s in seeds]
        root = Path(directory).parents[5]  # <root>/runs/model/system/ensemble/dt/seed
        outputs = [_directory(run, s, root) for s in seeds]
        assert outputs[seeds.index(run.seed)] == Path(directory), "run folder layout changed"
        results = run_replicas(potential, atoms, settings, outputs, seeds=seeds,
                               temperatures=[p.temperature_K for p in plans])
        cache[cell] = dict(zip(seeds, results))
    return cache[cell].pop(run.seed)


def _directory(run, seed: int, root: Path) -> Path:
    from dataclasses import replace

    return replace(run, seed=seed).directory(root)

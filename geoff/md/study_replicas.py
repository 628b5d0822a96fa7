"""A study's seeds as batched replicas (``replicas: true`` in the study YAML).

The runs of one cell of the matrix (model, system, ensemble, time step) differ only in their
seed, so they are one system: the first of them that runs advances all the seeds at once
(``geoff.md.replicas.run_replicas``, each seed writing into its own run folder), and the
others pick up their ``RunResult`` from the cache. Each replica equals its single run, so the
study's numbers do not change; only the wall time does (a replica's ``steps_per_s`` is the
batch's steps per second of integration: all its replicas advance together).

Cells that cannot be batched (LAMMPS, reference calculators) run one seed at a time as
before; multiple time stepping is batched (on a ``force_head="both"`` model). The study's
``md: {cuda_graphs: auto|true|false}`` (default auto) goes to the batched force call
(``run_replicas(..., cuda_graphs=...)``); runs that are not batched ignore it.

Wall-clock limits for a study split over processes with a time limit (the failure study on a
GPU): ``GEOFF_REPLICA_DEADLINE`` (Unix time) and ``GEOFF_REPLICA_WALL_S`` (seconds per
batched run) stop a batched run at the earlier of the two; ``GEOFF_REPLICA_RESERVE_S``
(seconds) stops every batched run but those of the study's last ensemble that much before the
deadline, so the last one (the NVE leg after an NVT run) keeps that time however late the
process started. Stopped replicas are censored (``status`` ok, ``steps_done`` <
``steps_requested``) and written like finished ones, so a stopped study keeps what it ran.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Optional

from .engines import model_or_calculator
from .settings import MDSettings


def batchable(run, settings: MDSettings, engine: str, potential) -> bool:
    if engine != "ase" or run.is_reference:
        return False
    try:
        model, _ = model_or_calculator(potential)
    except TypeError:
        return False
    return model is not None and (settings.forces != "mts" or model.force_head == "both")


def deadline_from_env(now: Optional[float] = None, reserve: bool = False) -> Optional[float]:
    """The ``time.time()`` at which a batched run starting ``now`` stops (see the module
    docstring), or None without the environment variables. ``reserve``: the run is followed
    by others (``GEOFF_REPLICA_RESERVE_S`` is kept for them)."""
    now = time.time() if now is None else now
    limits = []
    if os.environ.get("GEOFF_REPLICA_DEADLINE"):
        deadline = float(os.environ["GEOFF_REPLICA_DEADLINE"])
        if reserve and os.environ.get("GEOFF_REPLICA_RESERVE_S"):
            deadline -= float(os.environ["GEOFF_REPLICA_RESERVE_S"])
        limits.append(deadline)
    if os.environ.get("GEOFF_REPLICA_WALL_S"):
        limits.append(now + float(os.environ["GEOFF_REPLICA_WALL_S"]))
    return min(limits) if limits else None


def replica_result(cfg, run, settings: MDSettings, potential, atoms, directory: Path,
                   cache: Dict[tuple, dict]):
    """This run's ``RunResult`` (its folder ``directory``), from one batched run of every seed
    of its cell."""
    from .replicas import run_replicas
    from .study_config import batch_options, run_settings

    cell = run.key[:4]
    if cell not in cache or run.seed not in cache[cell]:
        seeds = list(cfg.seeds)
        plans = [run_settings(cfg, run.model, run.ensemble, run.dt, s) for s in seeds]
        root = Path(directory).parents[5]  # <root>/runs/model/system/ensemble/dt/seed
        outputs = [_directory(run, s, root) for s in seeds]
        assert outputs[seeds.index(run.seed)] == Path(directory), "run folder layout changed"
        results = run_replicas(potential, atoms, settings, outputs, seeds=seeds,
                               temperatures=[p.temperature_K for p in plans],
                               deadline=deadline_from_env(reserve=_not_last(cfg, run)),
                               **batch_options(cfg))
        cache[cell] = dict(zip(seeds, results))
    return cache[cell].pop(run.seed)


def _not_last(cfg, run) -> bool:
    """Whether ensembles of the study come after this run's (they keep the reserve)."""
    names = [e["name"] for e in cfg.ensembles]
    return names.index(run.ensemble["name"]) < len(names) - 1


def _directory(run, seed: int, root: Path) -> Path:
    from dataclasses import replace

    return replace(run, seed=seed).directory(root)

"""The model jobs of the barrier benchmark: hyper-parameters, one training run, parallel runs.

Every job trains a property-only model (target = the per-atom label, energy and force loss
weights 0) with ``geoff.training.train`` for ``minutes`` of wall clock, then predicts the
labelled atoms of the test glasses through ``GeoffCalculator`` (CPU, float64). Jobs run in
separate processes (``run_jobs``: spawn, ``jobs`` at a time, devices handed out round robin),
each with ``cores // jobs`` threads.

``JOBS`` maps a row name to (model, hparams, trainer overrides). The eight zoo models share one
budget and small widths (``BUDGET_HPARAMS``); ``symgnn-paper`` is SymGNN at the SymGNN paper's
settings, as far as geoff's SymGNN has them (Li, Zhang, Tang, Bauchy and Sun, ICML 2024; the
values are those of the authors' released code, github.com/haoyuli02/SymGNN,
``train.conf.yaml`` and ``train.py``):

* graph: all neighbours within 5 Å (``edge_threshold=5``): cutoff 5.0 Å;
* 4 message-passing layers, 32 features (``emb_dim = hidden_dim = 32``): n_layers 4,
  n_features 32;
* 2 orthogonal transforms of the edge vectors per pass: n_samples 2 (the paper samples them
  from a learned distribution; geoff draws Haar-random ones, fixed ones in eval mode);
* Adam (amsgrad), learning rate 1e-4, weight decay 0, gradient norm clipped at 0.1, MSE on
  standardised labels, full batch (all training glasses in one step), patience 100
  evaluations: lr 1e-4, grad_clip 0.1, batch_size = number of training glasses, no warm-up,
  constant learning rate, early_stopping 100 (geoff uses AdamW without amsgrad, and
  per-element standardisation);
* not reproducible in geoff's SymGNN: its EGAT attention layers (heads 8, 4, 2, 1), batch
  norm, dropout 0.25, and 20,000 epochs (here: the same wall-clock budget as every model).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

MODELS = ("schnet", "dimenet", "painn", "egnn", "nequip", "mace", "faenet", "symgnn")
CUTOFF = 5.0  # Å, every job (the paper's graph cutoff too)
BUDGET_HPARAMS = {
    "schnet": dict(n_features=32, n_layers=3, n_rbf=16),
    "dimenet": dict(n_features=32, n_layers=2, n_rbf=6, l_max=3),
    "painn": dict(n_features=32, n_layers=3, n_rbf=16),
    "egnn": dict(n_features=32, n_layers=3, n_rbf=16),
    "nequip": dict(n_features=16, n_layers=3, l_max=2, n_rbf=8),
    "mace": dict(n_features=16, n_layers=2, l_max=2, correlation=2, n_rbf=8),
    "faenet": dict(n_features=32, n_layers=3, n_rbf=16),
    "symgnn": dict(n_features=32, n_layers=3, n_rbf=16, n_samples=4),
    "gemnet": dict(n_features=16, n_layers=2, n_rbf=6),
}
# early stopping off: every row trains for the whole wall-clock budget and keeps its best
# validation checkpoint (with patience 30, most rows stopped after 20-50 s of a 5-min budget)
BUDGET_TRAINING = dict(batch_size=1, lr=3e-3, early_stopping=0)
PAPER = "symgnn-paper"
PAPER_HPARAMS = dict(n_features=32, n_layers=4, n_samples=2, n_rbf=16)
PAPER_TRAINING = dict(lr=1e-4, grad_clip=0.1, warmup_steps=0, scheduler="constant",
                      early_stopping=100, ema_decay=0.0)  # batch_size: all training glasses


def job_spec(row: str, n_train_glasses: int) -> Dict:
    """``{"model", "hparams", "training"}`` of a table row (a zoo model name or PAPER)."""
    if row == PAPER:
        return {"model": "symgnn", "hparams": dict(PAPER_HPARAMS),
                "training": dict(PAPER_TRAINING, batch_size=max(n_train_glasses, 1))}
    if row not in BUDGET_HPARAMS:
        raise ValueError(f"unknown model {row!r}: choose from {sorted(BUDGET_HPARAMS)} or "
                         f"{PAPER!r}")
    return {"model": row, "hparams": dict(BUDGET_HPARAMS[row]), "training": dict(BUDGET_TRAINING)}


def train_and_predict(row: str, spec: Dict, files: Dict[str, str], key: str, minutes: float,
                      workdir: str, device: str = "cpu", threads: int = 1,
                      max_steps: int = 0, cutoff: float = CUTOFF, seed: int = 0) -> Dict:
    """Train one row's model, predict the labelled test atoms; metrics and predictions.

    Returns ``{"row", "pred" (labelled test atoms, file order), "seconds", "parameters",
    "checkpoint", "device"}``. Runs in a worker process (imports inside).
    """
    import torch

    import geoff
    from geoff.calculators.ase import GeoffCalculator
    from geoff.data.io import read_dataset
    from geoff.training import train

    torch.set_num_threads(max(int(threads), 1))
    out = Path(workdir) / row
    cfg = dict(model=spec["model"], hparams=spec["hparams"], cutoff=cutoff,
               data=files["train"], val_data=files.get("val"), test_data=files["test"],
               val_fraction=0.0 if files.get("val") else 0.2, target=key, energy_weight=0.0,
               forces_weight=0.0, epochs=100000, max_time=minutes, progress=False,
               max_steps=max_steps, num_threads=threads, seed=seed, device=device,
               out=str(out), overwrite=True)
    cfg.update(spec["training"])
    t0 = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - t0
    model = geoff.load(out / "best.ckpt")
    preds = []
    for atoms in read_dataset(files["test"]):
        atoms.calc = GeoffCalculator(model, dtype="float64")
        atoms.get_potential_energy()
        preds.append(np.asarray(atoms.calc.results[key])[np.isfinite(atoms.arrays[key])])
    return {"row": row, "pred": np.concatenate(preds).tolist(), "seconds": round(seconds, 1),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "checkpoint": str(out / "best.ckpt"), "device": device, **training_summary(out)}


def training_summary(run_dir) -> Dict:
    """Optimizer steps, epochs and why training stopped (the run folder's summary.json): a
    wall-clock budget buys very different numbers of steps per model and machine."""
    import json

    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    return {k: summary.get(k) for k in ("steps", "epochs", "stopped_by")}


def run_jobs(rows: Sequence[str], n_train_glasses: int, files: Dict[str, str], key: str,
             minutes: float, workdir: str, devices: Sequence[str] = ("cpu",), jobs: int = 1,
             deadline: Optional[float] = None, on_result=None,
             max_steps: int = 0, cutoff: float = CUTOFF) -> List[Dict]:
    """Every row's ``train_and_predict``, ``jobs`` processes at a time, devices round robin.

    ``deadline`` (``time.time()`` seconds): rows not started by then are skipped, and a job is
    given at most the minutes left. ``on_result(result)`` is called as each job finishes (to
    write partial tables); a failed job gives ``{"row", "error"}``.
    """
    threads = max((os.cpu_count() or 1) // max(jobs, 1), 1)
    results: List[Dict] = []

    def finish(res):
        results.append(res)
        if on_result is not None:
            on_result(res)

    tasks = []
    for k, row in enumerate(rows):
        budget = minutes
        if deadline is not None:
            # jobs beyond the first wave start when a slot frees: at most ~minutes later
            start = time.time() + (k // max(jobs, 1)) * minutes * 60.0
            budget = min(minutes, (deadline - start) / 60.0 - 0.5)  # 30 s to predict
            if budget <= 0.1:
                finish({"row": row, "error": "skipped: the deadline"})
                continue
        tasks.append((row, job_spec(row, n_train_glasses), files, key, budget, workdir,
                      devices[k % len(devices)], threads, max_steps, cutoff))
    if jobs <= 1:  # in this process: no start-up cost (tests, one CPU)
        for task in tasks:
            finish(_guarded(task))
        return results
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        # spawn, not fork: a forked torch (threads, CUDA) is unsafe
        for future in as_completed([pool.submit(_guarded, task) for task in tasks]):
            finish(future.result())
    return results


def _guarded(task) -> Dict:
    """``train_and_predict(*task)``; a failure becomes ``{"row", "error"}`` so that one
    broken model does not cost the other rows."""
    try:
        return train_and_predict(*task)
    except Exception as exc:
        return {"row": task[0], "error": f"{type(exc).__name__}: {exc}"}

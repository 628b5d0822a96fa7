"""The trainer: ``train(config)`` from Python, ``geoff train`` from the shell.

``Trainer.fit`` is the recipe: train an epoch, close it (validation, schedule, best and last
checkpoints, a metrics row), until a stop; ``Trainer.run`` then tests best.ckpt and writes the
summary. The pieces live in their own modules:

* ``run_folder``: the files of ``--out`` (config, splits, metrics, curve, test metrics,
  summary, log), each written atomically;
* ``distributed``: device, threads, torchrun's process group and the all-reduces;
* ``run_data``: the data files, species, split and graphs;
* ``resume``: the trainer state in last.ckpt, from which ``--resume`` continues exactly (a
  resumed run takes the same steps as an uninterrupted one);
* ``evaluation``: validation and test statistics; ``console``: the printed lines and the
  progress bar; ``losses``, ``schedule``, ``normalisation``.

Data parallel: launched by ``torchrun --nproc_per_node K``, each process takes a shard of every
global batch; losses are normalised by global label counts, so K processes follow the same
trajectory as one process with the same ``batch_size`` (to rounding). NCCL on GPUs, gloo on CPU.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch

from .. import checkpoint as ckpt_io
from ..bench import device_name
from ..inference import dtype_name, torch_dtype
from ..potentials import build_model
from . import config as cfg_mod
from . import console, distributed, resume
from .dataset import GraphLoader
from .evaluation import evaluate, test_metrics
from .losses import STAT_KEYS, Loss, metric_column, metrics_from_sums
from .normalisation import apply as apply_normalisation
from .normalisation import normalisation, target_normalisation
from .run_data import RunData
from .run_folder import RunFolder
from .schedule import EMA, LRSchedule

class StopTraining(Exception):
    """Raise from a callback to end training cleanly (the test metrics are still computed)."""


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where this torch has it (one kernel instead of ~10 per tensor: on a small
    model the per-tensor loop costs as much as a tenth of the step)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


class Trainer:
    """Set up from a config dictionary (see ``geoff.training.config``), then ``run()``.

    ``callbacks`` are called as ``cb(trainer)`` after every optimizer step; raising
    ``StopTraining`` ends training (checkpoint and test metrics are still written), any other
    exception aborts the run (the last checkpoint stays as it was).
    """

    def __init__(self, config: Dict[str, Any], callbacks: Iterable[Callable] = ()):
        self.cfg = config
        self.callbacks = list(callbacks)
        self._t_start = time.time()
        self.runtime = distributed.start(config["device"], config["num_threads"],
                                         config["deterministic"])
        self.rank, self.world, self.device = self.runtime.rank, self.runtime.world, self.runtime.device
        self.dtype = torch_dtype(config["dtype"])
        self.eval_dtype = torch_dtype(config["eval_dtype"])
        self.show_progress = bool(config["progress"]) and self.runtime.main
        self.folder = RunFolder(config["out"], main=self.runtime.main)
        self.out = self.folder.out
        self._init_data()
        self._init_model()
        self._init_optimisation()
        # Everything below is saved in last.ckpt and restored by --resume.
        self.step = 0  # optimizer steps taken
        self.epoch = 0  # current epoch (0-based)
        self.batch_in_epoch = 0  # batches of the current epoch already taken
        self.best = math.inf  # best monitored loss (validation, or training without a val set)
        self.bad_validations = 0
        self.history: List[Dict[str, float]] = []
        self.train_time = 0.0
        self.acc = self._zero_acc()  # the epoch's running loss statistics (STAT_KEYS)
        self.last_loss = math.nan
        if config["resume"]:
            self._resume(config["resume"])
        else:
            self.folder.claim(config["overwrite"])
        self.split_files = self.folder.open(config, self.data.split, self.data.sources)

    # ------------------------------------------------------------------ setup
    def _init_data(self):
        self.data = RunData(self.cfg, progress=self.show_progress)
        self.species, self.split = self.data.species, self.data.split
        self.train_set = self.data.train.converted(self.dtype, self.device)
        self.val_set = self.data.val.converted(self.dtype, self.device) if self.data.val else None
        self.loader = GraphLoader(self.train_set, np.arange(len(self.train_set)),
                                  self.cfg["batch_size"], shuffle=True, seed=self.cfg["seed"],
                                  rank=self.rank, world_size=self.world)

    def _init_model(self):
        cfg = self.cfg
        torch.manual_seed(cfg["seed"])
        # Initial weights drawn in float64 whatever the caller's default dtype, so that a seed
        # gives the same model in every process (pytest sets float64, torchrun workers do not).
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            model = build_model(cfg["model"], species=self.species, cutoff=cfg["cutoff"],
                                force_head=cfg["force_head"],
                                properties=[cfg["target"]] if cfg["target"] else [],
                                **cfg["hparams"])
        finally:
            torch.set_default_dtype(default_dtype)
        self.norm = normalisation(self.data.train, self.species,
                                  atomic_energies=cfg["atomic_energies"],
                                  energy_scale=cfg["energy_scale"])
        apply_normalisation(model, self.norm)
        if cfg["target"]:
            model.property_heads[cfg["target"]].set_normalisation(
                *target_normalisation(self.data.train, self.species))
        self.model = model.to(device=self.device, dtype=self.dtype).train()
        self.ema = None
        if cfg["ema_decay"] > 0:
            self.ema = EMA(self.model, copy.deepcopy(self.model), cfg["ema_decay"])
        self._params = list(self.model.parameters())
        self.net = distributed.wrap(self.model, self.runtime,
                                    find_unused_parameters=cfg["force_head"] != "conservative")

    def _init_optimisation(self):
        cfg = self.cfg
        weights = {"energy": cfg["energy_weight"], "forces": cfg["forces_weight"],
                   "stress": cfg["stress_weight"], "energies": cfg["energies_weight"],
                   "target": cfg["target_weight"] if cfg["target"] else 0.0}
        if cfg["force_head"] == "both":
            weights["direct_forces"] = cfg["direct_forces_weight"]
        self.loss = Loss(weights, kind=cfg["loss"], huber_delta=cfg["huber_delta"],
                         target=cfg["target"])
        # No force backward pass for a property-only model (forces_weight 0).
        self.train_forces = cfg["forces_weight"] > 0 or cfg["force_head"] != "conservative"
        self.train_stress = cfg["stress_weight"] > 0 and bool(self.data.train.has["stress"].any())
        self.val_stress = bool(self.data.val is not None and self.data.val.has["stress"].any())
        self.optimizer = _adamw(self.model.parameters(), cfg["lr"], cfg["weight_decay"])
        self.steps_per_epoch = len(self.loader)
        total = cfg["epochs"] * self.steps_per_epoch
        if cfg["max_steps"]:
            total = min(total, cfg["max_steps"])
        self.total_steps = total
        self.schedule = LRSchedule(self.optimizer, cfg["lr"], cfg["scheduler"], cfg["warmup_steps"],
                                   total, cfg["plateau_factor"], cfg["plateau_patience"],
                                   cfg["min_lr"])

    def _zero_acc(self) -> Dict[str, torch.Tensor]:
        return {k: torch.zeros((), dtype=torch.float64, device=self.device) for k in STAT_KEYS}

    # ------------------------------------------------------------------ checkpoints
    def save(self, path, with_state: bool = True) -> None:
        """Write the EMA model (raw weights without EMA) and, for resuming, the trainer state."""
        if not self.runtime.main:
            return
        model = self.ema.shadow if self.ema else self.model
        extra = {"trainer": resume.capture(self)} if with_state else \
            {"epoch": self.epoch, "step": self.step, "best": self.best}
        ckpt_io.save(model, path, extra=extra)

    def _resume(self, where):
        path = self.folder.last if where is True else where
        payload, state = resume.read(path, self.cfg)
        if int(state["world_size"]) != self.world:
            self.folder.log(f"note: resuming a {state['world_size']}-process run with "
                            f"{self.world} process(es); the data order is the same, rounding "
                            "may differ")
        resume.restore(self, payload, state)
        self.folder.log(f"resumed {path}: epoch {self.epoch + 1}, batch {self.batch_in_epoch}, "
                        f"step {self.step}")

    # ------------------------------------------------------------------ training
    def fit(self) -> str:
        """Train until ``epochs``, ``max_steps``, ``max_time``, early stopping or a callback;
        returns which of them stopped it."""
        reason = None
        self._t_run = time.time()
        with console.ProgressBar(self.show_progress, self.total_steps, self.step) as bar:
            while reason is None and self.epoch < self.cfg["epochs"]:
                t_epoch = time.time()
                stopped = self._train_epoch(bar)
                self._clock()
                reason = self._close_epoch(time.time() - t_epoch, stopped)
        self._clock()
        self._ensure_best_checkpoint()
        self.plot()
        return reason or "epochs"

    def _ensure_best_checkpoint(self) -> None:
        """best.ckpt from the last weights when no validation ever improved on the start."""
        if self.runtime.main and not self.folder.best.exists():
            self.save(self.folder.best, with_state=False)

    def _train_epoch(self, bar: console.ProgressBar) -> Optional[str]:
        """Steps from the current batch to the end of the epoch; why it stopped early, if so."""
        every = self.cfg["checkpoint_every"]
        for batch, counts in self.loader.batches(self.epoch, self.batch_in_epoch):
            loss = self._train_step(batch, counts)
            self.batch_in_epoch += 1
            self._watch(loss, bar)
            if every and self.step % every == 0:
                self._clock()
                self.save(self.folder.last)
            stopped = self._stop_wanted()
            if stopped:
                return stopped
        return None

    def _train_step(self, batch, counts) -> torch.Tensor:
        out = self.net(batch, compute_forces=self.train_forces, compute_stress=self.train_stress)
        loss, stats = self.loss(out, batch, counts)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.world if self.world > 1 else loss).backward()
        if self.cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self._params, self.cfg["grad_clip"], foreach=True)
        self.schedule.apply(self.step)
        self.optimizer.step()
        self.step += 1
        if self.ema:
            self.ema.update()
        loss = loss.detach()
        for k, v in stats.items():
            self.acc[k] += v
        self.acc["loss"] += loss
        self.acc["steps"] += 1
        return loss

    def _watch(self, loss: torch.Tensor, bar: console.ProgressBar) -> None:
        """Fail on a non-finite loss; move the progress bar."""
        # Reading the loss syncs a GPU: every 10th step there, every step on CPU.
        if self.step % 10 == 1 or self.device.type == "cpu":
            self.last_loss = float(loss)
            if not math.isfinite(self.last_loss):
                raise FloatingPointError(
                    f"the loss became {self.last_loss} at step {self.step}; lower "
                    "--lr or --grad-clip, or check the data (last.ckpt is intact)")
            bar.show(self.epoch + 1, self.cfg["epochs"], self.last_loss,
                     self.optimizer.param_groups[0]["lr"])
        bar.advance()

    def _stop_wanted(self) -> Optional[str]:
        """Run the callbacks; the first reason to stop now (callback, max_steps, max_time)."""
        cfg = self.cfg
        stopped = None
        try:
            for cb in self.callbacks:
                cb(self)
        except StopTraining:
            stopped = "callback"
        if cfg["max_steps"] and self.step >= cfg["max_steps"]:
            stopped = stopped or "max_steps"
        if cfg["max_time"] and time.time() - self._t_start > 60.0 * cfg["max_time"]:
            stopped = stopped or "max_time"
        if self.world > 1 and (cfg["max_time"] or self.callbacks):
            stopped = distributed.agree_to_stop(stopped, self.device)  # clocks, callbacks differ
        return stopped

    def _close_epoch(self, epoch_time: float, stopped: Optional[str]) -> Optional[str]:
        """Metrics row and checkpoints of the epoch (a partial one when stopped mid-way);
        returns the reason to stop training, if any."""
        if stopped and self.batch_in_epoch < self.steps_per_epoch:
            self._end_epoch(epoch_time, partial=True)
            self.save(self.folder.last)
            return stopped
        early = self._end_epoch(epoch_time)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.save(self.folder.last)
        return stopped or ("early_stopping" if early else None)

    def _end_epoch(self, epoch_time: float, partial: bool = False) -> bool:
        """Validation, schedule, best checkpoint, metrics; True when early stopping says stop."""
        row = self._training_row(epoch_time, partial)
        validate = partial or (self.epoch + 1) % self.cfg["val_every"] == 0 \
            or self.epoch + 1 == self.cfg["epochs"]
        stop = False
        if validate:
            row.update(self.validate())
            monitored = row.get("val_loss", row["train_loss"])
            if not partial:
                self.schedule.observe(monitored)
            if monitored < self.best:
                self.best = monitored
                self.bad_validations = 0
                self.save(self.folder.best, with_state=False)
                row["best"] = 1
            elif not partial:
                self.bad_validations += 1
                patience = self.cfg["early_stopping"]
                stop = bool(patience) and self.bad_validations >= patience
        self.history.append(row)
        self.folder.write_metrics(self.history)
        self.folder.log(console.epoch_line(row, self.cfg["epochs"]))
        return stop

    def _training_row(self, epoch_time: float, partial: bool) -> Dict[str, Any]:
        """The epoch's metrics row so far: position, learning rate, training loss and MAEs."""
        sums = distributed.all_reduce_sums({k: float(v) for k, v in self.acc.items()},
                                           self.world, self.device)
        self.acc = self._zero_acc()
        fraction = self.batch_in_epoch / max(self.steps_per_epoch, 1)
        row: Dict[str, Any] = {
            "epoch": self.epoch + (fraction if partial else 1),
            "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": epoch_time,
            # loss: per-rank shares of each step's global loss, summed over ranks and steps;
            # steps: counted on every rank.
            "train_loss": sums["loss"] / max(sums["steps"] / self.world, 1.0),
        }
        row.update({metric_column(k, "train"): v for k, v in metrics_from_sums(sums).items()})
        return row

    def validate(self) -> Dict[str, float]:
        """Loss and MAEs of the EMA model on the validation set (empty dict without one)."""
        if self.val_set is None:
            return {}
        model = self.ema.shadow if self.ema else self.model
        sums = evaluate(model, self.val_set, self.loss, self.cfg["val_batch_size"],
                        self.val_stress, self.rank, self.world)
        row = {"val_loss": self.loss.total_from_sums(sums)}
        row.update({metric_column(k, "val"): v for k, v in metrics_from_sums(sums).items()})
        return row

    def _clock(self) -> None:
        """Add the time since the last call to ``train_time`` (before it is checkpointed)."""
        now = time.time()
        self.train_time += now - self._t_run
        self._t_run = now

    def plot(self):
        """learning_curve.png: losses, energy and force MAE per epoch (train and validation)."""
        return self.folder.write_learning_curve(self.history)

    # ------------------------------------------------------------------ test and summary
    def test(self) -> Dict[str, Any]:
        """Test MAE/RMSE of best.ckpt in ``eval_dtype`` (float64 by default), on rank 0."""
        if not self.runtime.main or len(self.split["test"]) == 0:
            return {}
        test_set = self.data.test()
        model = ckpt_io.load(self.folder.best, device=self.device, dtype=self.eval_dtype)
        data = test_set.converted(self.eval_dtype, self.device)
        sums = evaluate(model, data, self.loss, self.cfg["val_batch_size"],
                        bool(test_set.has["stress"].any()))
        metrics = test_metrics(sums, data, self.eval_dtype, self.folder.best)
        self.folder.write_test_metrics(metrics)
        for line in console.test_lines(sums, len(data), self.eval_dtype):
            self.folder.log(line)
        return metrics

    def run(self) -> Dict[str, Any]:
        """Banner, fit, test, summary.json; returns paths, test metrics, history and timing."""
        for line in console.banner(self):
            self.folder.log(line)
        try:
            reason = self.fit()
            test = self.test()
        finally:
            distributed.finish(self.runtime)
        result = self._result(reason, test)
        summary = {k: v for k, v in result.items() if k not in ("history", "test_metrics")}
        summary.update({"parameters": sum(p.numel() for p in self.model.parameters()),
                        "device": device_name(self.device), "processes": self.world,
                        "dtype": dtype_name(self.dtype)})
        self.folder.write_summary(summary)
        self.folder.log(f"done ({reason}): {self.step} steps, {self.train_time:.1f} s training, "
                        f"{result['mean_epoch_time_s']:.2f} s per epoch; model {self.folder.best}")
        return result

    def _result(self, reason: str, test: Dict[str, Any]) -> Dict[str, Any]:
        epochs_done = [r for r in self.history if float(r["epoch"]).is_integer()]
        times = [r["epoch_time_s"] for r in epochs_done]
        folder = self.folder
        return {
            "out": str(self.out),
            "best_checkpoint": str(folder.best),
            "last_checkpoint": str(folder.last),
            "metrics_csv": str(folder.metrics),
            "learning_curve": str(folder.curve),
            "test_metrics_json": str(folder.test_json) if test else None,
            "splits": [str(p) for p in self.split_files],
            "test_metrics": test,
            "stopped_by": reason,
            "epochs": self.epoch, "steps": self.step,
            "train_time_s": self.train_time,
            "mean_epoch_time_s": float(np.mean(times)) if times else math.nan,
            "history": self.history,
        }


def train(config=None, callbacks: Iterable[Callable] = (), **overrides) -> Dict[str, Any]:
    """Train a model; ``config`` is a dict or a YAML path, ``overrides`` are options.

    Returns paths (``best_checkpoint``, ``last_checkpoint``, ``metrics_csv``,
    ``learning_curve``, ``splits``, ``test_metrics_json``), ``test_metrics`` (a dict of MAE/RMSE
    in meV/atom, meV/Å, meV/Å³), ``history`` (the metrics rows) and timing.
    """
    cfg = cfg_mod.make_config(config, **overrides)
    return Trainer(cfg, callbacks).run()

"""The trainer: ``train(config)`` from Python, ``geoff train`` from the shell.

One run writes into its ``out`` folder::

    config.yaml                 the effective options (rerun with `geoff train --config`)
    split_{train,val,test}.txt  frame indices of each split
    best.ckpt                   EMA weights at the best validation loss (what you use)
    last.ckpt                   the latest state, with everything `--resume` needs
    metrics.csv                 one row per epoch: losses and MAEs (train and validation)
    learning_curve.png          the same, plotted
    test_metrics.{json,csv}     final test MAE/RMSE of best.ckpt, evaluated in float64
    summary.json                how the run went: epochs, steps, training time, stop reason,
                                parameters, device
    train.log                   the printed epoch lines

Exact resume: ``last.ckpt`` holds the raw and EMA weights, AdamW's moments, the schedule, the
RNG state, the position in the data (epoch, batch; the order of an epoch is a function of the
seed and the epoch) and the epoch's running sums, so a resumed run takes the same steps as an
uninterrupted one. Checkpoints are written atomically (temporary file, then rename).

Data parallel: launched by ``torchrun --nproc_per_node K``, each process takes a shard of every
global batch; losses are normalised by global label counts, so K processes follow the same
trajectory as one process with the same ``batch_size`` (to rounding). NCCL on GPUs, gloo on CPU.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from .. import checkpoint as ckpt_io
from ..bench import device_name
from ..data.io import read_dataset
from ..potentials import build_model
from . import config as cfg_mod
from .dataset import GraphDataset, GraphLoader, make_split, read_split, write_split
from .losses import TERMS, UNITS, Loss, metrics_from_sums
from .normalisation import apply as apply_normalisation
from .normalisation import describe, normalisation
from .schedule import EMA, LRSchedule

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_STAT_KEYS = [f"{t}_{s}" for t in TERMS for s in ("pen", "abs", "sq", "n")] + ["loss", "steps"]
_UNIT_TAG = {"meV/atom": "meV_atom", "meV/Å": "meV_A", "meV/Å³": "meV_A3", "meV": "meV"}
TRAINER_STATE_VERSION = 1


class StopTraining(Exception):
    """Raise from a callback to end training cleanly (the test metrics are still computed)."""


def _symbols_sorted(frames) -> List[str]:
    from ase.data import atomic_numbers

    symbols = set()
    for atoms in frames:
        symbols.update(atoms.get_chemical_symbols())
    return sorted(symbols, key=lambda s: atomic_numbers[s])


def evaluate(model, dataset: GraphDataset, loss: Loss, batch_size: int,
             compute_stress: bool, rank: int = 0, world_size: int = 1) -> Dict[str, float]:
    """Summed residual statistics of ``model`` on ``dataset`` (this rank's shard, all-reduced).

    The model is evaluated in eval mode (forces by autograd, no graph kept for training).
    """
    was_training = model.training
    model.eval()
    indices = np.arange(len(dataset))[rank::world_size]
    sums = {k: 0.0 for k in _STAT_KEYS}
    acc = None
    counts = dataset.label_counts()
    loader = GraphLoader(dataset, indices, batch_size) if len(indices) else []
    for batch, _ in loader:
        out = model(batch, compute_stress=compute_stress)
        out = {k: v.detach() for k, v in out.items()}
        _, stats = loss(out, batch, counts)
        acc = stats if acc is None else {k: acc[k] + stats[k] for k in acc}
    if acc is not None:
        for k, v in acc.items():
            sums[k] = float(v)
    model.train(was_training)
    return _all_reduce(sums, world_size, device=dataset[0]["positions"].device)


def _all_reduce(sums: Dict[str, float], world_size: int, device) -> Dict[str, float]:
    if world_size <= 1:
        return sums
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where this torch has it (one kernel instead of ~10 per tensor: on a small
    model the per-tensor loop costs as much as a tenth of the step)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _column(split: str, key: str) -> str:
    """'val', 'forces_mae' -> 'val_forces_mae_meV_A'."""
    term, kind = key.rsplit("_", 1)
    return f"{split}_{term}_{kind}_{_UNIT_TAG[UNITS[term][1]]}"


class Trainer:
    """Set up from a config dictionary (see ``geoff.training.config``), then ``run()``.

    ``callbacks`` are called as ``cb(trainer)`` after every optimizer step; raising
    ``StopTraining`` ends training (checkpoint and test metrics are still written), any other
    exception aborts the run (the last checkpoint stays as it was).
    """

    def __init__(self, config: Dict[str, Any], callbacks: Iterable[Callable] = ()):
        self.cfg = config
        self.callbacks = list(callbacks)
        self.out = Path(config["out"])
        self._t_start = time.time()
        self._init_runtime()
        self._log_lines: List[str] = []
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
        self._acc = self._zero_acc()
        self.last_loss = math.nan
        if config["resume"]:
            self._resume(config["resume"])
        elif self.rank == 0:
            self._check_fresh_out()
        self._write_run_files()

    # ------------------------------------------------------------------ setup
    def _init_runtime(self):
        cfg = self.cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        device = cfg["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":  # one GPU per process: the local rank's
            device = f"cuda:{local_rank}"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
            torch.cuda.set_device(self.device)
        self._owns_process_group = False
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                dist.init_process_group("nccl", device_id=self.device)
            else:
                dist.init_process_group("gloo")
            self._owns_process_group = True
        if self.world > 1:
            # Benign: a (1, F) weight's gradient arrives with other (equivalent) strides.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
        threads = cfg["num_threads"]
        if threads == 0 and self.world > 1:
            threads = max(1, torch.get_num_threads() // max(local_world, 1))
        if threads:
            torch.set_num_threads(threads)
        if cfg["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.dtype = _DTYPES[cfg["dtype"]]
        self.eval_dtype = _DTYPES[cfg["eval_dtype"]]
        self.show_progress = bool(cfg["progress"]) and self.rank == 0

    def _init_data(self):
        cfg = self.cfg
        t0 = time.time()
        frames = read_dataset(cfg["data"])
        extra = {name: read_dataset(cfg[f"{name}_data"]) if cfg[f"{name}_data"] else None
                 for name in ("val", "test")}
        every = frames + [a for f in extra.values() if f for a in f]
        self.species = list(cfg["species"] or _symbols_sorted(every))
        if cfg["splits_from"]:
            split = read_split(cfg["splits_from"])
        else:
            split = make_split(len(frames), 0.0 if extra["val"] else cfg["val_fraction"],
                               0.0 if extra["test"] else cfg["test_fraction"], cfg["seed"])
        sources = {"train": str(cfg["data"])}
        for name in ("val", "test"):
            if extra[name] is not None:
                split[name] = np.arange(len(extra[name]))
                sources[name] = str(cfg[f"{name}_data"])
            else:
                sources[name] = str(cfg["data"])
        for name, idx in split.items():
            n = len(extra[name]) if name != "train" and extra[name] is not None else len(frames)
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"split '{name}' has indices outside the {n} structures of "
                                 f"{sources[name]}; the split files belong to other data")
        if len(split["train"]) == 0:
            raise ValueError("the training split is empty")
        self.split, self.split_sources = split, sources

        def build(name):
            src = extra[name] if name != "train" and extra[name] is not None else frames
            chosen = [src[int(k)] for k in split[name]]
            return GraphDataset.from_frames(chosen, self.species, cfg["cutoff"],
                                            progress=self.show_progress and len(chosen) > 200) \
                if chosen else None

        self.train_master = build("train")
        self.val_master = build("val")
        self._test_frames = lambda: build("test")  # neighbour lists at test time, on rank 0
        self.train_set = self.train_master.converted(self.dtype, self.device)
        self.val_set = self.val_master.converted(self.dtype, self.device) if self.val_master else None
        self.loader = GraphLoader(self.train_set, np.arange(len(self.train_set)),
                                  cfg["batch_size"], shuffle=True, seed=cfg["seed"],
                                  rank=self.rank, world_size=self.world)
        self._data_time = time.time() - t0

    def _init_model(self):
        cfg = self.cfg
        torch.manual_seed(cfg["seed"])
        # Initial weights drawn in float64 whatever the caller's default dtype, so that a seed
        # gives the same model in every process (pytest sets float64, torchrun workers do not).
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            model = build_model(cfg["model"], species=self.species, cutoff=cfg["cutoff"],
                                force_head=cfg["force_head"], **cfg["hparams"])
        finally:
            torch.set_default_dtype(default_dtype)
        self.norm = normalisation(self.train_master, self.species,
                                  atomic_energies=cfg["atomic_energies"],
                                  energy_scale=cfg["energy_scale"])
        apply_normalisation(model, self.norm)
        self.model = model.to(device=self.device, dtype=self.dtype).train()
        self.ema = None
        if cfg["ema_decay"] > 0:
            self.ema = EMA(self.model, copy.deepcopy(self.model), cfg["ema_decay"])
        self._params = list(self.model.parameters())
        self.net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model,
                           device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           broadcast_buffers=False,
                           find_unused_parameters=cfg["force_head"] != "conservative")

    def _init_optimisation(self):
        cfg = self.cfg
        weights = {"energy": cfg["energy_weight"], "forces": cfg["forces_weight"],
                   "stress": cfg["stress_weight"], "energies": cfg["energies_weight"]}
        if cfg["force_head"] == "both":
            weights["direct_forces"] = cfg["direct_forces_weight"]
        self.loss = Loss(weights, kind=cfg["loss"], huber_delta=cfg["huber_delta"])
        self.train_stress = cfg["stress_weight"] > 0 and bool(self.train_master.has["stress"].any())
        self.val_stress = bool(self.val_master is not None and self.val_master.has["stress"].any())
        self.optimizer = _adamw(self.model.parameters(), cfg["lr"], cfg["weight_decay"])
        self.steps_per_epoch = len(self.loader)
        total = cfg["epochs"] * self.steps_per_epoch
        if cfg["max_steps"]:
            total = min(total, cfg["max_steps"])
        self.total_steps = total
        self.schedule = LRSchedule(self.optimizer, cfg["lr"], cfg["scheduler"], cfg["warmup_steps"],
                                   total, cfg["plateau_factor"], cfg["plateau_patience"],
                                   cfg["min_lr"])

    def _check_fresh_out(self):
        if (self.out / "last.ckpt").exists() and not self.cfg["overwrite"]:
            raise ValueError(f"{self.out} already holds a run (last.ckpt): continue it with "
                             "--resume, start afresh with --overwrite, or choose a new --out")
        if self.cfg["overwrite"]:
            for name in ("best.ckpt", "last.ckpt", "metrics.csv", "train.log",
                         "test_metrics.json", "test_metrics.csv", "learning_curve.png"):
                (self.out / name).unlink(missing_ok=True)

    def _write_run_files(self):
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt_io.atomic_write(self.out / "config.yaml",
                             lambda tmp: Path(tmp).write_text(cfg_mod.to_yaml(self.cfg)))
        self.split_files = write_split(self.out, self.split, self.split_sources)
        for stale in self.out.glob(".*.ckpt.*.tmp"):  # left by a killed checkpoint write
            stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------ state
    def _zero_acc(self) -> Dict[str, torch.Tensor]:
        return {k: torch.zeros((), dtype=torch.float64, device=self.device) for k in _STAT_KEYS}

    def trainer_state(self) -> Dict[str, Any]:
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
        state = {
            "version": TRAINER_STATE_VERSION,
            "config": json.dumps(self.cfg, sort_keys=True),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best": self.best, "bad_validations": self.bad_validations,
            "history": self.history, "train_time": self.train_time,
            "acc": cpu(self._acc),
            "model": cpu(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema_updates": self.ema.updates if self.ema else 0,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
            else torch.zeros(0, dtype=torch.uint8),
            "world_size": self.world,
            "species": self.species,
            "atomic_energies": torch.as_tensor(np.asarray(self.norm["atomic_energies"])),
            "scale": float(self.norm["scale"]),
        }
        return state

    def save(self, path, with_state: bool = True) -> None:
        """Write the EMA model (raw weights without EMA) and, for resuming, the trainer state."""
        if self.rank != 0:
            return
        model = self.ema.shadow if self.ema else self.model
        extra = {"trainer": self.trainer_state()} if with_state else \
            {"epoch": self.epoch, "step": self.step, "best": self.best}
        ckpt_io.save(model, path, extra=extra)

    def _resume(self, resume):
        path = self.out / "last.ckpt" if resume is True else Path(resume)
        if not path.exists():
            raise FileNotFoundError(f"nothing to resume: no checkpoint at {path}; start without "
                                    "--resume, or give the checkpoint path: --resume PATH")
        payload = ckpt_io.read(path)
        state = payload.get("extra", {}).get("trainer")
        if not isinstance(state, dict) or state.get("version") != TRAINER_STATE_VERSION:
            raise ValueError(f"{path} holds no trainer state (best.ckpt files do not); "
                             "resume from last.ckpt")
        old = json.loads(state["config"])
        changed = sorted(k for k in cfg_mod.BY_NAME
                         if k not in cfg_mod.RESUMABLE_CHANGES and old.get(k) != self.cfg.get(k))
        if changed:
            diffs = "; ".join(f"{k}: {old.get(k)!r} -> {self.cfg.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume {path} with different options ({diffs}); "
                             "only these may change: " + ", ".join(sorted(cfg_mod.RESUMABLE_CHANGES)))
        if int(state["world_size"]) != self.world:
            self._print(f"note: resuming a {state['world_size']}-process run with {self.world} "
                        "process(es); the data order is the same, rounding may differ")
        self.model.load_state_dict(state["model"])
        if self.ema:
            self.ema.shadow.load_state_dict(payload["state_dict"])
            self.ema.updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and state["rng_cuda"].numel():
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best, self.bad_validations = float(state["best"]), int(state["bad_validations"])
        self.history = list(state["history"])
        self.train_time = float(state["train_time"])
        self._acc = {k: state["acc"][k].to(self.device) for k in _STAT_KEYS}
        self._print(f"resumed {path}: epoch {self.epoch + 1}, batch {self.batch_in_epoch}, "
                    f"step {self.step}")

    # ------------------------------------------------------------------ output
    def _print(self, line: str):
        if self.rank != 0:
            return
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
        self._log_lines.append(line)
        try:
            with open(self.out / "train.log", "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except FileNotFoundError:
            pass

    def _write_metrics(self):
        if self.rank != 0 or not self.history:
            return
        columns: List[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]

        def write(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=columns, restval="")
                w.writeheader()
                for row in self.history:
                    w.writerow({k: (f"{v:.12g}" if isinstance(v, float) else v) for k, v in row.items()})

        ckpt_io.atomic_write(self.out / "metrics.csv", write)

    def plot(self) -> Optional[Path]:
        """learning_curve.png: losses, energy and force MAE per epoch (train and validation)."""
        if self.rank != 0 or not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.history]
        panels = [("loss", "loss", ""), ("energy_mae", "energy MAE", "meV/atom"),
                  ("forces_mae", "force MAE", "meV/Å")]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
        for ax, (key, title, unit) in zip(axes, panels):
            for split, style in (("train", "-"), ("val", "--")):
                col = f"{split}_loss" if key == "loss" else _column(split, key)
                ys = [r.get(col, math.nan) for r in self.history]
                if any(isinstance(y, float) and math.isfinite(y) for y in ys):
                    ax.plot(epochs, ys, style, label=split)
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_title(title + (f" ({unit})" if unit else ""))
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        path = self.out / "learning_curve.png"
        ckpt_io.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        plt.close(fig)
        return path

    def _summary(self):
        n_params = sum(p.numel() for p in self.model.parameters())
        sizes = {k: len(v) for k, v in self.split.items()}
        self._print(f"geoff train: {self.cfg['model']} ({n_params:,} parameters), species "
                    f"{self.species}, cutoff {self.cfg['cutoff']} Å, force head "
                    f"{self.cfg['force_head']}, {self.cfg['dtype']} on {self.device}"
                    + (f" x {self.world} processes" if self.world > 1 else ""))
        edges = self.train_master.n_edges.sum() / self.train_master.n_atoms.sum()
        self._print(f"data: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test "
                    f"structures; {edges:.1f} neighbours per atom; graphs built in "
                    f"{self._data_time:.1f} s")
        self._print(describe(self.norm, self.species))
        self._print(f"{self.steps_per_epoch} steps per epoch of {self.cfg['batch_size']} "
                    f"structures; output in {self.out}")

    # ------------------------------------------------------------------ training
    def _train_step(self, batch, counts) -> torch.Tensor:
        out = self.net(batch, compute_stress=self.train_stress)
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
            self._acc[k] += v
        self._acc["loss"] += loss
        self._acc["steps"] += 1
        return loss

    def validate(self) -> Dict[str, float]:
        """Loss and MAEs of the EMA model on the validation set (empty dict without one)."""
        if self.val_set is None:
            return {}
        model = self.ema.shadow if self.ema else self.model
        sums = evaluate(model, self.val_set, self.loss, self.cfg["val_batch_size"],
                        self.val_stress, self.rank, self.world)
        row = {"val_loss": self.loss.total_from_sums(sums)}
        row.update({_column("val", k): v for k, v in metrics_from_sums(sums).items()})
        return row

    def _end_epoch(self, epoch_time: float, partial: bool = False) -> bool:
        """Validation, schedule, best checkpoint, metrics; True when early stopping says stop."""
        sums = _all_reduce({k: float(v) for k, v in self._acc.items()}, self.world, self.device)
        self._acc = self._zero_acc()
        fraction = self.batch_in_epoch / max(self.steps_per_epoch, 1)
        row: Dict[str, Any] = {
            "epoch": self.epoch + (fraction if partial else 1),
            "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": epoch_time,
            # loss: per-rank shares of each step's global loss, summed over ranks and steps;
            # steps: counted on every rank.
            "train_loss": sums["loss"] / max(sums["steps"] / self.world, 1.0),
        }
        row.update({_column("train", k): v for k, v in metrics_from_sums(sums).items()})
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
                self.save(self.out / "best.ckpt", with_state=False)
                row["best"] = 1
            elif not partial:
                self.bad_validations += 1
                patience = self.cfg["early_stopping"]
                stop = bool(patience) and self.bad_validations >= patience
        self.history.append(row)
        self._write_metrics()
        self._print(self._epoch_line(row))
        return stop

    def _epoch_line(self, row) -> str:
        e = row["epoch"]
        epoch = f"{e:5.2f}" if not float(e).is_integer() else f"{int(e):3d}"
        parts = [f"epoch {epoch}/{self.cfg['epochs']}", f"loss {row['train_loss']:.3e}"]
        if "val_loss" in row:
            parts.append(f"val {row['val_loss']:.3e}")
        src = "val" if "val_loss" in row else "train"
        for key, label in (("energy_mae", "E"), ("forces_mae", "F"), ("stress_mae", "S")):
            col = _column(src, key)
            if col in row:
                parts.append(f"{label} {row[col]:.2f} {UNITS[key.rsplit('_', 1)[0]][1]}")
        parts.append(f"lr {row['lr']:.1e}")
        parts.append(f"{row['epoch_time_s']:.1f} s" + (" *" if row.get("best") else ""))
        return "  ".join(parts)

    def fit(self) -> str:
        """Train until ``epochs``, ``max_steps``, ``max_time``, early stopping or a callback."""
        cfg = self.cfg
        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=min(self.step, self.total_steps),
                       unit="step", dynamic_ncols=True, leave=False, file=sys.stderr,
                       mininterval=0.5)
        t_run = time.time()
        reason = "epochs"
        try:
            while self.epoch < cfg["epochs"]:
                t_epoch = time.time()
                stopped = None
                for batch, counts in self.loader.batches(self.epoch, self.batch_in_epoch):
                    loss = self._train_step(batch, counts)
                    self.batch_in_epoch += 1
                    # Reading the loss syncs a GPU: every 10th step there, every step on CPU.
                    if self.step % 10 == 1 or self.device.type == "cpu":
                        self.last_loss = float(loss)
                        if not math.isfinite(self.last_loss):
                            raise FloatingPointError(
                                f"the loss became {self.last_loss} at step {self.step}; lower "
                                "--lr or --grad-clip, or check the data (last.ckpt is intact)")
                        if bar is not None:
                            bar.set_description(f"epoch {self.epoch + 1}/{cfg['epochs']}",
                                                refresh=False)
                            bar.set_postfix(loss=f"{self.last_loss:.3e}",
                                            lr=f"{self.optimizer.param_groups[0]['lr']:.1e}",
                                            refresh=False)
                    if bar is not None:
                        bar.update(1)
                    if cfg["checkpoint_every"] and self.step % cfg["checkpoint_every"] == 0:
                        self.train_time += time.time() - t_run
                        t_run = time.time()
                        self.save(self.out / "last.ckpt")
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
                        stopped = self._agree(stopped)  # clocks and callbacks may differ by rank
                    if stopped:
                        break
                self.train_time += time.time() - t_run
                t_run = time.time()
                complete = self.batch_in_epoch >= self.steps_per_epoch
                if stopped and not complete:
                    self._end_epoch(time.time() - t_epoch, partial=True)
                    self.save(self.out / "last.ckpt")
                    reason = stopped
                    break
                early = self._end_epoch(time.time() - t_epoch)
                self.epoch += 1
                self.batch_in_epoch = 0
                self.save(self.out / "last.ckpt")
                if stopped or early:
                    reason = stopped or "early_stopping"
                    break
        finally:
            if bar is not None:
                bar.close()
        self.train_time += time.time() - t_run
        if not (self.out / "best.ckpt").exists() and self.rank == 0:
            self.save(self.out / "best.ckpt", with_state=False)
        self.plot()
        return reason

    def _agree(self, stopped: Optional[str]) -> Optional[str]:
        """Stop on every rank when any rank wants to (else the others would wait forever)."""
        flag = torch.tensor([1.0 if stopped else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return (stopped or "another rank") if flag.item() > 0 else None

    # ------------------------------------------------------------------ test
    def test(self) -> Dict[str, Any]:
        """Test MAE/RMSE of best.ckpt in ``eval_dtype`` (float64 by default), on rank 0."""
        if self.rank != 0 or len(self.split["test"]) == 0:
            return {}
        test_master = self._test_frames()
        model = ckpt_io.load(self.out / "best.ckpt", device=self.device, dtype=self.eval_dtype)
        data = test_master.converted(self.eval_dtype, self.device)
        sums = evaluate(model, data, self.loss, self.cfg["val_batch_size"],
                        bool(test_master.has["stress"].any()))
        metrics: Dict[str, Any] = {"n_structures": len(data), "n_atoms": int(data.n_atoms.sum()),
                                   "dtype": str(self.eval_dtype).replace("torch.", ""),
                                   "checkpoint": str(self.out / "best.ckpt")}
        for key, value in metrics_from_sums(sums).items():
            term = key.rsplit("_", 1)[0]
            metrics[f"{key}_{_UNIT_TAG[UNITS[term][1]]}"] = value
        text = json.dumps(metrics, indent=2)
        ckpt_io.atomic_write(self.out / "test_metrics.json", lambda tmp: Path(tmp).write_text(text + "\n"))

        def write_csv(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["metric", "value"])
                for k, v in metrics.items():
                    w.writerow([k, f"{v:.6g}" if isinstance(v, float) else v])

        ckpt_io.atomic_write(self.out / "test_metrics.csv", write_csv)
        lines = [f"test ({len(data)} structures, {metrics['dtype']}, best.ckpt):"]
        m = metrics_from_sums(sums)
        for term, (_, unit) in UNITS.items():
            if f"{term}_mae" in m:
                lines.append(f"  {term:<14s} MAE {m[f'{term}_mae']:9.3f}  RMSE "
                             f"{m[f'{term}_rmse']:9.3f}  {unit}")
        for line in lines:
            self._print(line)
        return metrics

    # ------------------------------------------------------------------ all
    def run(self) -> Dict[str, Any]:
        self._summary()
        try:
            reason = self.fit()
            test = self.test()
        finally:
            if self.world > 1:
                dist.barrier()
                if self._owns_process_group:
                    dist.destroy_process_group()
        epochs_done = [r for r in self.history if float(r["epoch"]).is_integer()]
        times = [r["epoch_time_s"] for r in epochs_done]
        result = {
            "out": str(self.out),
            "best_checkpoint": str(self.out / "best.ckpt"),
            "last_checkpoint": str(self.out / "last.ckpt"),
            "metrics_csv": str(self.out / "metrics.csv"),
            "learning_curve": str(self.out / "learning_curve.png"),
            "test_metrics_json": str(self.out / "test_metrics.json") if test else None,
            "splits": [str(p) for p in getattr(self, "split_files", [])],
            "test_metrics": test,
            "stopped_by": reason,
            "epochs": self.epoch, "steps": self.step,
            "train_time_s": self.train_time,
            "mean_epoch_time_s": float(np.mean(times)) if times else math.nan,
            "history": self.history,
        }
        if self.rank == 0:
            summary = {k: v for k, v in result.items() if k not in ("history", "test_metrics")}
            summary.update({"parameters": sum(p.numel() for p in self.model.parameters()),
                            "device": device_name(self.device), "processes": self.world,
                            "dtype": str(self.dtype).replace("torch.", "")})
            text = json.dumps(summary, indent=2)
            ckpt_io.atomic_write(self.out / "summary.json",
                                 lambda tmp: Path(tmp).write_text(text + "\n"))
            self._print(f"done ({reason}): {self.step} steps, {self.train_time:.1f} s training, "
                        f"{result['mean_epoch_time_s']:.2f} s per epoch; model {self.out / 'best.ckpt'}")
        return result


def train(config=None, callbacks: Iterable[Callable] = (), **overrides) -> Dict[str, Any]:
    """Train a model; ``config`` is a dict or a YAML path, ``overrides`` are options.

    Returns paths (``best_checkpoint``, ``last_checkpoint``, ``metrics_csv``,
    ``learning_curve``, ``splits``, ``test_metrics_json``), ``test_metrics`` (a dict of MAE/RMSE
    in meV/atom, meV/Å, meV/Å³), ``history`` (the metrics rows) and timing.
    """
    cfg = cfg_mod.make_config(config, **overrides)
    return Trainer(cfg, callbacks).run()

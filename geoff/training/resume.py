"""What last.ckpt holds beyond the model, and how a run continues from it (``--resume``).

The trainer state is the raw (non-EMA) weights, AdamW's moments, the schedule, the RNG state,
the position in the data (epoch, batch: the order of an epoch is a function of the seed and
the epoch), the epoch's running sums, the history and the best loss so far, so a resumed run
takes the same steps as an uninterrupted one. The EMA weights are the checkpoint's model.
Everything is tensors, numbers and JSON text, read back with ``weights_only=True``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch

from .. import checkpoint as ckpt_io
from . import config as cfg_mod
from .losses import STAT_KEYS

TRAINER_STATE_VERSION = 1


def _cpu(state_dict) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}


def capture(trainer) -> Dict[str, Any]:
    """The trainer state of ``trainer`` (a ``Trainer``), as stored in ``extra["trainer"]``."""
    device = trainer.device
    return {
        "version": TRAINER_STATE_VERSION,
        "config": json.dumps(trainer.cfg, sort_keys=True),
        "step": trainer.step, "epoch": trainer.epoch, "batch_in_epoch": trainer.batch_in_epoch,
        "best": trainer.best, "bad_validations": trainer.bad_validations,
        "history": trainer.history, "train_time": trainer.train_time,
        "acc": _cpu(trainer.acc),
        "model": _cpu(trainer.model.state_dict()),
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict(),
        "ema_updates": trainer.ema.updates if trainer.ema else 0,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda"
        else torch.zeros(0, dtype=torch.uint8),
        "world_size": trainer.world,
        "species": trainer.species,
        "atomic_energies": torch.as_tensor(np.asarray(trainer.norm["atomic_energies"])),
        "scale": float(trainer.norm["scale"]),
    }


def read(path, cfg: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(checkpoint payload, trainer state)`` of ``path``, checked against the options ``cfg``.

    Refuses a file without trainer state (a best.ckpt) and option changes that would alter
    the computation so far (only ``config.RESUMABLE_CHANGES`` may differ).
    """
    path = Path(path)
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
                     if k not in cfg_mod.RESUMABLE_CHANGES and old.get(k) != cfg.get(k))
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {cfg.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {path} with different options ({diffs}); "
                         "only these may change: " + ", ".join(sorted(cfg_mod.RESUMABLE_CHANGES)))
    return payload, state


def restore(trainer, payload: Dict[str, Any], state: Dict[str, Any]) -> None:
    """Put ``trainer`` where the run of ``state`` stopped (weights, optimiser, RNG, position)."""
    trainer.model.load_state_dict(state["model"])
    if trainer.ema:
        trainer.ema.shadow.load_state_dict(payload["state_dict"])
        trainer.ema.updates = int(state["ema_updates"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng_cpu"])
    if trainer.device.type == "cuda" and state["rng_cuda"].numel():
        torch.cuda.set_rng_state(state["rng_cuda"], trainer.device)
    trainer.step, trainer.epoch = int(state["step"]), int(state["epoch"])
    trainer.batch_in_epoch = int(state["batch_in_epoch"])
    trainer.best, trainer.bad_validations = float(state["best"]), int(state["bad_validations"])
    trainer.history = list(state["history"])
    trainer.train_time = float(state["train_time"])
    trainer.acc = {k: state["acc"][k].to(trainer.device) for k in STAT_KEYS}

"""Learning-rate schedule and exponential moving average of weights.

Both keep their state in plain numbers/tensors so that checkpoints (loaded with
``weights_only=True``) restore them exactly.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn


class LRSchedule:
    """Linear warm-up, then ``plateau`` (reduce-on-plateau), ``cosine`` or ``constant``.

    The learning rate of step ``s`` (0-based) is ``warm(s) * decayed(s)`` with
    ``warm(s) = min(1, (s + 1) / warmup_steps)``. Plateau: after more than ``patience``
    observations without a relative improvement of ``threshold``, multiply by ``factor``
    (not below ``min_lr``). Cosine: from ``lr`` at the end of warm-up to ``min_lr`` at
    ``total_steps``.
    """

    def __init__(self, optimizer, lr: float, kind: str = "plateau", warmup_steps: int = 0,
                 total_steps: int = 1, factor: float = 0.5, patience: int = 5,
                 min_lr: float = 0.0, threshold: float = 1e-4):
        if kind not in ("plateau", "cosine", "constant"):
            raise ValueError(f"scheduler must be 'plateau', 'cosine' or 'constant', got {kind!r}")
        self.optimizer = optimizer
        self.lr, self.kind, self.warmup = float(lr), kind, int(warmup_steps)
        self.total = max(int(total_steps), 1)
        self.factor, self.patience = float(factor), int(patience)
        self.min_lr, self.threshold = min(float(min_lr), float(lr)), float(threshold)
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.kind == "cosine":
            t = min(max((step - self.warmup) / max(self.total - self.warmup, 1), 0.0), 1.0)
            lr = self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        elif self.kind == "plateau":
            lr = max(self.lr * self.scale, self.min_lr)
        else:
            lr = self.lr
        return lr * warm

    def apply(self, step: int) -> float:
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def observe(self, metric: float) -> None:
        """Feed a validation loss (plateau only)."""
        if self.kind != "plateau" or not math.isfinite(metric):
            return
        if metric < self.best * (1.0 - self.threshold):
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale *= self.factor
                self.bad = 0

    def state_dict(self) -> Dict[str, float]:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.scale, self.best, self.bad = float(state["scale"]), float(state["best"]), int(state["bad"])


class EMA:
    """``ema = d * ema + (1 - d) * weights`` after each step, ``d = min(decay, (1+n)/(10+n))``.

    ``shadow`` is a full copy of the model (eval mode, no gradients) holding the average; it is
    what validation, checkpoints and tests use.
    """

    def __init__(self, model: nn.Module, shadow: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = shadow.eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)
        self._src: List[torch.Tensor] = list(model.parameters())
        self._dst: List[torch.Tensor] = list(self.shadow.parameters())
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        torch._foreach_lerp_(self._dst, [p.detach() for p in self._src], 1.0 - d)
        self.updates += 1

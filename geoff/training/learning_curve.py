"""learning_curve.png: loss, energy MAE and force MAE per epoch, training and validation."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List

from ..checkpoint import atomic_write
from .losses import metric_column

PANELS = [("loss", "loss", ""), ("energy_mae", "energy MAE", "meV/atom"),
          ("forces_mae", "force MAE", "meV/Å")]


def plot(history: List[Dict[str, float]], path) -> Path:
    """Three log-scale panels from the rows of metrics.csv (``history``), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for ax, (key, title, unit) in zip(axes, PANELS):
        for split, style in (("train", "-"), ("val", "--")):
            col = f"{split}_loss" if key == "loss" else metric_column(key, split)
            ys = [r.get(col, math.nan) for r in history]
            if any(isinstance(y, float) and math.isfinite(y) for y in ys):
                ax.plot(epochs, ys, style, label=split)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title + (f" ({unit})" if unit else ""))
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path

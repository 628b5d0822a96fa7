"""What a training run shows: the start-up banner, one line per epoch, the test table, and a
progress bar on stderr. Lines are returned as strings; ``RunFolder.log`` prints and keeps them.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List

from ..inference import dtype_name
from .losses import UNITS, metric_column, metrics_from_sums


def banner(trainer) -> List[str]:
    """The model, the data, the normalisation and the batching of ``trainer`` (a Trainer)."""
    from .normalisation import describe

    cfg, data = trainer.cfg, trainer.data
    n_params = sum(p.numel() for p in trainer.model.parameters())
    sizes = {k: len(v) for k, v in data.split.items()}
    edges = data.train.n_edges.sum() / data.train.n_atoms.sum()
    processes = f" x {trainer.world} processes" if trainer.world > 1 else ""
    return [
        f"geoff train: {cfg['model']} ({n_params:,} parameters), species {data.species}, "
        f"cutoff {cfg['cutoff']} Å, force head {cfg['force_head']}, {cfg['dtype']} on "
        f"{trainer.device}{processes}",
        f"data: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test "
        f"structures; {edges:.1f} neighbours per atom; graphs built in {data.seconds:.1f} s",
        describe(trainer.norm, data.species),
        f"{trainer.steps_per_epoch} steps per epoch of {cfg['batch_size']} structures; "
        f"output in {trainer.out}",
    ]


def epoch_line(row: Dict[str, Any], epochs: int) -> str:
    """One metrics row as printed: losses, validation MAEs (else training), lr, time, best mark."""
    e = row["epoch"]
    epoch = f"{e:5.2f}" if not float(e).is_integer() else f"{int(e):3d}"
    parts = [f"epoch {epoch}/{epochs}", f"loss {row['train_loss']:.3e}"]
    if "val_loss" in row:
        parts.append(f"val {row['val_loss']:.3e}")
    src = "val" if "val_loss" in row else "train"
    for key, label in (("energy_mae", "E"), ("forces_mae", "F"), ("stress_mae", "S")):
        col = metric_column(key, src)
        if col in row:
            parts.append(f"{label} {row[col]:.2f} {UNITS[key.rsplit('_', 1)[0]][1]}")
    parts.append(f"lr {row['lr']:.1e}")
    parts.append(f"{row['epoch_time_s']:.1f} s" + (" *" if row.get("best") else ""))
    return "  ".join(parts)


def test_lines(sums: Dict[str, float], n_structures: int, dtype) -> List[str]:
    """The test table: one line per labelled term, MAE and RMSE in its unit."""
    lines = [f"test ({n_structures} structures, {dtype_name(dtype)}, best.ckpt):"]
    m = metrics_from_sums(sums)
    for term, (_, unit) in UNITS.items():
        if f"{term}_mae" in m:
            lines.append(f"  {term:<14s} MAE {m[f'{term}_mae']:9.3f}  RMSE "
                         f"{m[f'{term}_rmse']:9.3f}  {unit}")
    return lines


class ProgressBar:
    """A tqdm bar over optimizer steps on stderr, or nothing when ``enabled`` is False.

    Use as a context manager; ``show`` updates the text, ``advance`` counts a step.
    """

    def __init__(self, enabled: bool, total: int, initial: int = 0):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=min(initial, total), unit="step",
                            dynamic_ncols=True, leave=False, file=sys.stderr, mininterval=0.5)

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def show(self, epoch: int, epochs: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}/{epochs}", refresh=False)
            self.bar.set_postfix(loss=f"{loss:.3e}", lr=f"{lr:.1e}", refresh=False)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

"""The folder a training run writes (``--out``), file by file.

::

    config.yaml                 the effective options (rerun with `geoff train --config`)
    split_{train,val,test}.txt  frame indices of each split
    best.ckpt                   EMA weights at the best validation loss (what you use)
    last.ckpt                   the latest state, with everything `--resume` needs
    metrics.csv                 one row per epoch: losses and MAEs (train and validation)
    learning_curve.png          the same, plotted
    test_metrics.{json,csv}     final test MAE/RMSE of best.ckpt, evaluated in float64
    summary.json                how the run went: epochs, steps, training time, stop reason,
                                parameters, device
    train.log                   the printed lines

Every file but train.log (appended line by line) is written atomically: a temporary file in
the folder, then a rename, so a killed run leaves each file whole, old or new. Only the main
process (rank 0) writes; on other ranks every method here does nothing.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..checkpoint import atomic_write
from . import config as cfg_mod
from . import learning_curve
from .dataset import write_split

# What --overwrite clears before a new run starts (config.yaml and the splits are rewritten).
RESULTS = ("best.ckpt", "last.ckpt", "metrics.csv", "train.log", "test_metrics.json",
           "test_metrics.csv", "learning_curve.png", "summary.json")
# Every file written atomically; a run killed mid-write leaves ".<name>.<random>.tmp".
ATOMIC = ("config.yaml", "split_train.txt", "split_val.txt", "split_test.txt", "best.ckpt",
          "last.ckpt", "metrics.csv", "learning_curve.png", "test_metrics.json",
          "test_metrics.csv", "summary.json")


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


class RunFolder:
    """``RunFolder(out, main)``: the paths of one run and the writers of its files."""

    def __init__(self, out, main: bool = True):
        self.out = Path(out)
        self.main = main
        self.best = self.out / "best.ckpt"
        self.last = self.out / "last.ckpt"
        self.metrics = self.out / "metrics.csv"
        self.curve = self.out / "learning_curve.png"
        self.test_json = self.out / "test_metrics.json"
        self.test_csv = self.out / "test_metrics.csv"
        self.summary = self.out / "summary.json"
        self.log_file = self.out / "train.log"

    def claim(self, overwrite: bool) -> None:
        """Refuse a folder that holds a run, unless ``overwrite`` (then clear its results)."""
        if not self.main:
            return
        if self.last.exists() and not overwrite:
            raise ValueError(f"{self.out} already holds a run (last.ckpt): continue it with "
                             "--resume, start afresh with --overwrite, or choose a new --out")
        if overwrite:
            for name in RESULTS:
                (self.out / name).unlink(missing_ok=True)

    def open(self, cfg: Dict[str, Any], split: Dict[str, np.ndarray],
             sources: Dict[str, str]) -> List[Path]:
        """Write config.yaml and the split files, drop temporaries of a killed write.

        Returns the split files' paths (none on ranks other than 0).
        """
        if not self.main:
            return []
        self.out.mkdir(parents=True, exist_ok=True)
        _write_text(self.out / "config.yaml", cfg_mod.to_yaml(cfg))
        split_files = write_split(self.out, split, sources)
        for name in ATOMIC:  # temporaries of writes a killed run did not finish
            for stale in self.out.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
        return split_files

    def log(self, line: str) -> None:
        """Print ``line`` (above a progress bar, if any) and append it to train.log."""
        if not self.main:
            return
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
        try:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except FileNotFoundError:  # the folder does not exist yet
            pass

    def write_metrics(self, history: List[Dict[str, Any]]) -> None:
        """metrics.csv: one row per epoch, the union of the rows' columns in first-seen order."""
        if not self.main or not history:
            return
        columns: List[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]

        def write(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=columns, restval="")
                w.writeheader()
                for row in history:
                    w.writerow({k: (f"{v:.12g}" if isinstance(v, float) else v)
                                for k, v in row.items()})

        atomic_write(self.metrics, write)

    def write_learning_curve(self, history: List[Dict[str, Any]]) -> Optional[Path]:
        """learning_curve.png from the metrics rows (None when there are none)."""
        if not self.main or not history:
            return None
        return learning_curve.plot(history, self.curve)

    def write_test_metrics(self, metrics: Dict[str, Any]) -> None:
        """test_metrics.json (full precision) and test_metrics.csv (6 significant digits)."""
        if not self.main:
            return
        _write_text(self.test_json, json.dumps(metrics, indent=2) + "\n")

        def write_csv(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["metric", "value"])
                for k, v in metrics.items():
                    w.writerow([k, f"{v:.6g}" if isinstance(v, float) else v])

        atomic_write(self.test_csv, write_csv)

    def write_summary(self, summary: Dict[str, Any]) -> None:
        """summary.json: how the run went."""
        if self.main:
            _write_text(self.summary, json.dumps(summary, indent=2) + "\n")

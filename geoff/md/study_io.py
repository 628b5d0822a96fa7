"""The files of a study: JSON (NaN as null, written atomically), CSV tables, and the saved
trajectory of a finished run."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List

import numpy as np

from ..checkpoint import atomic_write

RESULT_COLUMNS = [
    "model", "forces", "system", "ensemble", "integrator", "dt_fs", "seed", "engine", "status",
    "n_atoms", "steps_requested", "steps_done", "simulated_ps", "failure_step",
    "failure_time_ps", "failure_reason", "drift_meV_atom_ps", "fluct_meV_atom",
    "max_dev_meV_atom", "T_target",
    "T_mean", "T_std", "T_error", "ke_ks", "rdf_error", "steps_per_s", "speedup", "message",
]


def json_ready(d):
    if isinstance(d, dict):
        return {k: json_ready(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [json_ready(v) for v in d]
    if isinstance(d, (np.floating, float)):
        return None if not np.isfinite(d) else float(d)
    if isinstance(d, np.integer):
        return int(d)
    if isinstance(d, Path):
        return str(d)
    return d


def write_json(path, data) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(
        json.dumps(json_ready(data), indent=1, sort_keys=True)))


def write_csv(path: Path, rows: List[dict], columns: List[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return "" if not np.isfinite(v) else f"{v:.6g}"
        return v

    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: fmt(r.get(k, "")) for k in columns})

    atomic_write(path, write)


def read_frames(directory: Path) -> list:
    """The saved trajectory of a finished run (for the Jacobian samples of a resumed study)."""
    import ase.io

    for name in ("trajectory.extxyz", "trajectory.traj"):
        if (directory / name).exists():
            try:
                return ase.io.read(directory / name, ":")
            except Exception:  # an unreadable trajectory only costs Jacobian samples
                return []
    return []

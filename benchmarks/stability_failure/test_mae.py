"""Test force errors of trained runs that have a checkpoint but no ``test_metrics.json`` (a
GPU call's clock stopped their training before its test), so that the report can place them.

  python benchmarks/stability_failure/test_mae.py OUT/train [--device cuda] [--data-dir DIR]

For every ``<train>/<system>/<run>/best.ckpt`` without ``test_metrics.json``: the model in
float64 (as the trainer's test) on the frames of the run's ``split_test.txt`` (0-based indices
into ``<data-dir>/<system>.extxyz.gz``), one frame at a time; writes ``test_metrics.json``
with ``forces_mae_meV_A`` / ``forces_rmse_meV_A`` (the conservative head, or the direct one
of a direct model) and, for a "both" model, ``direct_forces_mae_meV_A`` (the direct head),
per force component as the trainer reports them, plus ``"source": "test_mae.py"``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def test_indices(run: Path) -> list:
    lines = (run / "split_test.txt").read_text().splitlines()
    return [int(x) for x in lines if x.strip() and not x.startswith("#")]


def force_errors(checkpoint: Path, frames: list, device: str) -> dict:
    """MAE/RMSE (meV/Å, over force components) of the checkpoint's heads on ``frames``."""
    import geoff
    from geoff.graph import atoms_to_graph

    model = geoff.load(str(checkpoint)).to(device=device, dtype=__import__("torch").float64)
    model.eval()
    residuals = {"forces": [], "direct_forces": []}
    for atoms in frames:
        graph = atoms_to_graph(atoms, model, min_distance=0.0)
        out = model(graph)
        ref = atoms.get_forces()
        for key in residuals:
            if key in out:
                residuals[key].append(out[key].detach().cpu().numpy() - ref)
    metrics = {"n_structures": len(frames), "dtype": "float64", "checkpoint": str(checkpoint),
               "source": "test_mae.py"}
    for key, res in residuals.items():
        if res:
            r = np.concatenate(res).ravel() * 1000.0
            metrics[f"{key}_mae_meV_A"] = float(np.mean(np.abs(r)))
            metrics[f"{key}_rmse_meV_A"] = float(np.sqrt(np.mean(r * r)))
    return metrics


def main(argv=None) -> int:
    import ase.io

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("train", help="the folder of <system>/<run>/ training runs")
    p.add_argument("--data-dir", default=str(HERE / "data"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", default=None,
                   help="a file of <system>/<run> lines: only these runs")
    p.add_argument("--skip", default=None,
                   help="a file of <system>/<run> lines: not these (e.g. runs still training)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    only, skip = (set(Path(f).read_text().split()) if f else None
                  for f in (args.only, args.skip))
    todo = [c.parent for c in sorted(Path(args.train).glob("*/*/best.ckpt"))
            if not (c.parent / "test_metrics.json").exists()
            and (only is None or f"{c.parent.parent.name}/{c.parent.name}" in only)
            and not (skip and f"{c.parent.parent.name}/{c.parent.name}" in skip)]
    data: dict = {}
    for run in todo:
        system = run.parent.name
        if system not in data:
            data[system] = ase.io.read(Path(args.data_dir) / f"{system}.extxyz.gz", index=":")
        frames = [data[system][i] for i in test_indices(run)]
        m = force_errors(run / "best.ckpt", frames, args.device)
        (run / "test_metrics.json").write_text(json.dumps(m, indent=1) + "\n")
        print(f"{system:12s} {run.name:28s} F MAE {m.get('forces_mae_meV_A', float('nan')):7.1f}"
              f" meV/A ({len(frames)} test frames)", flush=True)
    print(f"test_mae: {len(todo)} runs measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())

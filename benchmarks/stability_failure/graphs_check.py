"""Before call 3's MD: do captured CUDA graphs (``BatchedForces(..., cuda_graphs="auto")``)
give the eager forces here, and how much faster is a batched force call?

  python benchmarks/stability_failure/graphs_check.py --start data/ethanol.start.extxyz \
      --device cuda --json OUT.json CKPT [CKPT ...]

Per checkpoint: R replicas of the start structure (rattled 0.05 Å), the eager and the
captured force call (the head the study runs: conservative, direct, or for a "both" model
the MTS pair ``split``/``direct``), the largest |difference| of energy (eV) and forces (eV/Å),
and the median time of one call of each. Exit 0 when every checkpoint agrees within
``--tol`` eV/Å (float32 round-off), 1 when one does not (the call then runs eagerly), 2 when
this geoff's ``BatchedForces`` has no ``cuda_graphs`` option.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time

import numpy as np


def _median_ms(fn, calls: int, sync) -> float:
    fn()
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def check(path: str, atoms, replicas: int, device: str, calls: int) -> dict:
    import torch

    import geoff
    from geoff.md.replica_forces import BatchedForces

    model = geoff.load(path)
    forces = "direct" if model.force_head == "direct" else "conservative"
    rng = np.random.default_rng(0)
    pos = atoms.positions[None] + rng.normal(0, 0.05, (replicas, len(atoms), 3))
    eager = BatchedForces(model, atoms, device, "float32", forces)
    graphs = BatchedForces(model, atoms, device, "float32", forces, cuda_graphs="auto")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    calls_of = {"forces": lambda f: f(pos)}
    if model.force_head == "both":  # multiple time stepping: both force sets, then direct
        calls_of = {"split": lambda f: f.split(pos), "direct": lambda f: f.direct(pos)}
    row = {"checkpoint": path, "force_head": model.force_head, "replicas": replicas}
    worst = 0.0
    for name, call in calls_of.items():
        a, b = call(eager), call(graphs)
        worst = max(worst, *(float(np.nanmax(np.abs(x - y))) for x, y in zip(a[1:], b[1:])))
        row[f"{name}_energy_diff_eV"] = float(np.nanmax(np.abs(a[0] - b[0])))
        row[f"{name}_eager_ms"] = _median_ms(lambda: call(eager), calls, sync)
        row[f"{name}_graphs_ms"] = _median_ms(lambda: call(graphs), calls, sync)
    row["max_force_diff_eV_A"] = worst
    return row


def main(argv=None) -> int:
    import ase.io

    from geoff.md.replica_forces import BatchedForces

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--start", required=True, help="the start structure (extxyz)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--tol", type=float, default=1e-3, help="eV/Å")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if "cuda_graphs" not in inspect.signature(BatchedForces).parameters:
        print("graphs_check: this geoff's BatchedForces has no cuda_graphs option")
        return 2
    atoms = ase.io.read(args.start)
    rows = [check(c, atoms, args.replicas, args.device, args.calls) for c in args.checkpoints]
    for r in rows:
        times = "  ".join(f"{k[:-9]} {r[k]:.2f} -> {r[k[:-9] + '_graphs_ms']:.2f} ms"
                          for k in r if k.endswith("_eager_ms"))
        print(f"graphs_check {r['checkpoint']}: max |dF| {r['max_force_diff_eV_A']:.2e} eV/A; "
              f"{times}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0 if all(r["max_force_diff_eV_A"] <= args.tol for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Cost of every registered model at its default hyper-parameters, on the CPU.

For FCC Cu cells of 64 and 512 atoms (cutoff 5 Å, float32, energy + forces, i.e. one forward
and one backward pass): parameter count, median wall time per call, and peak memory (the
growth of the process's peak resident set during the calls, measured in a fresh subprocess
per model and size so that allocations of one do not hide another's).

    python benchmarks/model_cost.py [--models schnet painn ...] [--threads 2]

A model may be a variant, "name[key=value,...]" as in kchain.py: "gemnet[quadruplets=True]".
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# atoms -> repeats of the one-atom FCC cell (64 and 512 in the table; 4 and 32 for models too
# big for those, e.g. GemNet-Q with quadruplets at the full cutoff)
SIZES = {4: (1, 2, 2), 32: (2, 4, 4), 64: (4, 4, 4), 512: (8, 8, 8)}


def measure(name: str, n_atoms: int, threads: int, repeats: int) -> dict:
    import numpy as np
    import torch
    from ase.build import bulk

    from geoff.graph import atoms_to_graph
    from geoff.potentials import build_model

    from kchain import parse_variant

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    registered, hparams = parse_variant(name)  # "gemnet[quadruplets=True]": a variant
    model = build_model(registered, species=["Cu"], cutoff=5.0, **hparams).float().eval()
    atoms = bulk("Cu", "fcc", a=3.61) * SIZES[n_atoms]
    atoms.rattle(0.05, seed=1)
    graph = atoms_to_graph(atoms, model, dtype=torch.float32)
    model(graph)  # warm-up (lazy initialisation, allocator)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(graph)
        out["forces"].sum().item()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"params": sum(p.numel() for p in model.parameters()),
            "time_ms": 1e3 * float(np.median(times)),
            "peak_mb": peak / 1024.0, "growth_mb": (peak - base) / 1024.0,
            "edges": int(graph["edge_index"].shape[1]), **_quadruplet_count(model, graph)}


def _quadruplet_count(model, graph) -> dict:
    """Quadruplets of a GemNet-Q model on this graph (empty for other models)."""
    rep = model.representation
    if not getattr(rep, "quadruplets", False):
        return {}
    import torch

    from geoff.potentials.dimenet import build_triplets
    from geoff.potentials.gemnet import build_quadruplets

    ei, shifts, pos = graph["edge_index"], graph["shifts"], graph["positions"]
    d = torch.linalg.norm(pos[ei[1]] - pos[ei[0]] + shifts, dim=-1)
    idx_ji, idx_kj = build_triplets(ei, shifts, pos.shape[0])
    q_outer, _ = build_quadruplets(idx_ji, idx_kj, ei, shifts, d < rep.quadruplet_cutoff)
    return {"triplets": int(idx_ji.shape[0]), "quadruplets": int(q_outer.shape[0])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512], choices=sorted(SIZES))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "model_cost.md"))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.threads, args.repeats)))
        return 0
    from geoff.potentials import available_models

    rows = []
    for name in args.models or available_models():
        cells = []
        params = None
        for n in args.sizes:
            res = subprocess.run([sys.executable, __file__, "--one", name, str(n), "--threads",
                                  str(args.threads), "--repeats", str(args.repeats)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                cells += ["failed", "failed"]
                print(f"{name} {n}: {res.stderr[-500:]}", file=sys.stderr)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            params = r["params"]
            cells += [f"{r['time_ms']:.1f}", f"{r['peak_mb']:.0f}"]
            print(f"{name:8s} {n:4d} atoms: {r}", file=sys.stderr, flush=True)
        rows.append(f"| {name} | {params:,} | " + " | ".join(cells) + " |")
    import platform

    import torch

    text = ("# Model cost at default hyper-parameters (CPU)\n\n"
            f"FCC Cu, cutoff 5 Å, float32, energy + forces (forward + backward), "
            f"{args.threads} threads, median of {args.repeats} calls; peak memory = peak resident "
            f"set of a fresh process (includes ~the Python/torch baseline).\n"
            f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}.\n"
            "Generated by `python benchmarks/model_cost.py`.\n\n"
            "| model | parameters | "
            + " | ".join(f"{n} atoms ms | {n} atoms peak MB" for n in args.sizes) + " |\n"
            "|---|---|" + "---|---|" * len(args.sizes) + "\n" + "\n".join(rows) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

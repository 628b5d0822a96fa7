"""Time one energy+forces call of the ASE calculator on an FCC crystal.

    geoff bench model.ckpt --atoms 256 --dtype float32 float64
    geoff bench schnet --atoms 64 256 2048      # an untrained model at default size

Reports the median over ``--repeats`` calls (after a warm-up), split into neighbour-list /
graph building and the model's forward + backward, so you can see where the time goes.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint path, or a registry name for an untrained model")
    p.add_argument("--atoms", type=int, nargs="+", default=[256],
                   help="approximate atom counts (FCC supercells of 4 atoms; default 256)")
    p.add_argument("--element", default=None, help="element of the crystal (default: the model's first)")
    p.add_argument("--lattice", type=float, default=3.61, help="FCC lattice constant in Å (3.61: Cu)")
    p.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def device_name(device) -> str:
    """What a timing or training ran on, for tables: the GPU's name, or the CPU's threads."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'s' if n > 1 else ''})"


def time_call(calc, atoms, repeats: int):
    import torch

    graph_t, model_t = [], []
    graph = calc.graph(atoms)
    calc.model(graph)  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = calc.graph(atoms)
        t1 = time.perf_counter()
        out = calc.model(graph)
        out["forces"].sum().item()
        if calc.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        graph_t.append(t1 - t0)
        model_t.append(t2 - t1)
    return float(np.median(graph_t)), float(np.median(model_t))


def run(args) -> int:
    import torch
    from ase.build import bulk

    from .calculators import GeoffCalculator
    from .potentials import available_models, build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model in available_models():
        model = build_model(args.model, species=[args.element or "Cu"], cutoff=5.0)
    else:
        from .checkpoint import load

        model = load(args.model)
    element = args.element or model.species[0]
    print(f"{'atoms':>6} {'dtype':>8} {'graph ms':>9} {'model ms':>9} {'total ms':>9}")
    for n in args.atoms:
        reps = max(1, round((n / 4) ** (1 / 3)))
        atoms = bulk(element, "fcc", a=args.lattice, cubic=True) * (reps, reps, reps)
        atoms.rattle(0.02, seed=0)
        for dtype in args.dtype:
            calc = GeoffCalculator(model, device=args.device, dtype=dtype)
            g, m = time_call(calc, atoms, args.repeats)
            print(f"{len(atoms):6d} {dtype:>8} {1e3 * g:9.1f} {1e3 * m:9.1f} {1e3 * (g + m):9.1f}")
    return 0

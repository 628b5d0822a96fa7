"""Where one ASE calculator call spends its time: neighbour list, graph, model, the rest.

    python benchmarks/profile_calc.py [--sizes 256 864 4000] [--models schnet painn mace]
        [--threads 2] [--top 8]

FCC Cu rattled 0.05 Å, cutoff 5 Å, float32, energy + forces, the hyper-parameters of
``speed.py`` (MACE at 64 channels, l_max 3). Prints medians (ms) per part and the torch
profiler's top operators (self CPU time) of the model call at the middle size.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from speed import MODELS, structure


def median_ms(fn, repeats=3):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 864, 4000])
    parser.add_argument("--models", nargs="+", default=["schnet", "painn", "mace"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from geoff.calculators.ase import GeoffCalculator
    from geoff.graph import atoms_to_graph, neighbour_list
    from geoff.neighbours import torch_neighbour_list
    from geoff.potentials import build_model

    print("| model | atoms | matscipy list ms | torch list ms | graph ms | model ms | calc ms "
          "| list share of calc |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        calc = GeoffCalculator(build_model(name, ["Cu", "Zr"], 5.0, **MODELS[name]))
        for n in args.sizes:
            atoms = structure("cu", n)
            pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
            nl = median_ms(lambda: neighbour_list(pos, cell, pbc, 5.0))
            tnl = median_ms(lambda: torch_neighbour_list(torch.as_tensor(pos), cell, pbc, 5.0))
            graph = atoms_to_graph(atoms, calc.model, dtype=calc.dtype)
            gr = median_ms(lambda: atoms_to_graph(atoms, calc.model, dtype=calc.dtype))
            model = median_ms(lambda: calc.model(graph)["forces"].sum().item())
            call = median_ms(lambda: calc.calculate(atoms, ["energy", "forces"], ["positions"]))
            print(f"| {name} | {len(atoms)} | {nl:.1f} | {tnl:.1f} | {gr:.1f} | {model:.1f} | "
                  f"{call:.1f} | {nl / call:.0%} |", flush=True)
        mid = structure("cu", args.sizes[len(args.sizes) // 2])
        graph = atoms_to_graph(mid, calc.model, dtype=calc.dtype)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            calc.model(graph)["forces"].sum().item()
        print(f"\n{name}, {len(mid)} atoms, top operators by self CPU time:\n```")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top,
                                        max_name_column_width=40))
        print("```\n")


if __name__ == "__main__":
    main()

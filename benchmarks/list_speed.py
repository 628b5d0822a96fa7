"""Time the torch cell list (``geoff.neighbours.torch_neighbour_list``) alone, across sizes.

    python benchmarks/list_speed.py --device cuda --sizes 864 4000 32000 131072 1000000

FCC Cu rattled 0.05 Å (``speed.structure``), cutoff 5.5 Å (the calculator's 5 Å plus its
0.5 Å skin on CUDA). Prints, per size, the edges, the median ms of a search (synchronised),
the peak memory it allocated (GPU) and the host synchronisations it made (GPU, counted with
``torch.cuda.set_sync_debug_mode``). ``--all-pairs-max N`` sets ``ALL_PAIRS_MAX_ATOMS`` on
this device (0: the cell list at every size); ``--open`` searches the same atoms as a
cluster (no periodic direction); ``--profile`` adds the torch profiler's table. Run it from
two checkouts (``PYTHONPATH=...``) for a before / after.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from speed import structure


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 864, 4000])
    parser.add_argument("--cutoff", type=float, default=5.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-pairs-max", type=int, default=None,
                        help="geoff.neighbours.ALL_PAIRS_MAX_ATOMS for this run (0: the cell "
                             "list at every size)")
    parser.add_argument("--open", action="store_true",
                        help="the same atoms with no periodic direction (a cluster)")
    parser.add_argument("--profile", action="store_true",
                        help="print the torch profiler's operators of one search per size")
    args = parser.parse_args()
    import geoff.neighbours
    from geoff.neighbours import torch_neighbour_list

    if args.all_pairs_max is not None:
        geoff.neighbours.ALL_PAIRS_MAX_ATOMS = {"cuda": args.all_pairs_max,
                                                 "cpu": args.all_pairs_max}

    cuda = args.device.startswith("cuda")
    if cuda:  # the mode's "prototype feature" notice, once a process, before the counting
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.cuda.set_sync_debug_mode("warn")
            torch.cuda.set_sync_debug_mode("default")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    print(f"| atoms | edges | list ms | peak MB | host syncs |\n|---|---|---|---|---|")
    for n in args.sizes:
        atoms = structure("cu", n)
        if args.open:
            atoms.pbc = False
        x = torch.as_tensor(atoms.positions, device=args.device)

        def search():
            return torch_neighbour_list(x, atoms.cell.array, atoms.pbc, args.cutoff)

        edges = len(search()[0])
        times = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            search()
            sync()
            times.append(time.perf_counter() - t0)
        peak, syncs = "-", "-"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    search()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = sum("called a synchronizing" in str(w.message) for w in caught)
            peak = f"{(torch.cuda.max_memory_allocated() - base) / 2**20:.0f}"
        print(f"| {len(atoms)} | {edges} | {1e3 * float(np.median(times)):.2f} | {peak} | "
              f"{syncs} |", flush=True)
        if args.profile:
            activities = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if cuda else [])
            with torch.profiler.profile(activities=activities) as prof:
                search()
                sync()
            print(f"\n{len(atoms)} atoms, one search, operators by CPU time:\n```")
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=40,
                                            max_name_column_width=36))
            print("```\n")


if __name__ == "__main__":
    main()

"""Edge chunk 0 / 2^17 / "auto" side by side, in ONE process (``benchmarks/autochunk_gpu.sh``).

For each size (FCC Cu, float32, cutoff 5 Å, speed.py's hyper-parameters) and each model, one
energy+forces call of the model on a prepared graph, at each ``--chunks`` value: 0 (plain),
an int (edges per checkpointed chunk) or ``auto`` (``GeoffCalculator``'s default,
``geoff/potentials/autochunk.py``; called through ``calc.auto_chunk``, the user's path, so
the out-of-memory retry is in it). Per case: the chunk used (auto: what it chose, and its
calibration fit), the first call's time (auto: with the calibration), the median time,
atoms/s and GPU memory per atom (``torch.cuda.max_memory_allocated`` over the first call
minus what was allocated before it; CPU: nan). An out-of-memory case is a row, not the end.
One process: the imports and the graph (one per size, shared by the models: same cutoff and
species) are paid once, which is what lets 4 models x 2 sizes x 3 chunks and two 1M-atom
runs fit in a few minutes of GPU time.

    python benchmarks/autochunk_speed.py --device cuda --sizes 32000 131072 \\
        --big 1000000 --big-models painn mace --out autochunk.md
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

from speed import CUTOFF, MODELS, _median_time, first_call_memory, structure

KB = 1e3


def run_case(name: str, graph, n_atoms: int, chunk, device: str, repeats: int,
             budget: float) -> dict:
    """One row: ``chunk`` = 0, an int, or "auto"."""
    import torch

    from geoff.calculators.ase import GeoffCalculator
    from geoff.potentials import build_model

    torch.manual_seed(0)
    model = build_model(name, species=["Cu", "Zr"], cutoff=CUTOFF, **MODELS[name])
    calc = GeoffCalculator(model, device=device, dtype="float32", edge_chunk=chunk)
    call = calc.auto_chunk or calc.model
    row = {"model": name, "atoms": n_atoms, "edges": int(graph["edge_index"].shape[1]),
           "asked": chunk}
    dev = torch.device(device)
    try:
        start = time.perf_counter()
        row.update(first_call_memory(lambda: call(graph)["forces"].sum().item(), dev))
        row["first_s"] = time.perf_counter() - start
        auto = calc.auto_chunk
        row["used"] = auto.last_chunk if auto is not None else chunk
        if auto is not None and auto.fits:
            fit = next(iter(auto.fits.values()))
            row["fit"] = {"fixed_MB": fit.fixed / 1e6, "kept_B_per_edge": fit.kept,
                          "chunked_B_per_edge": fit.chunked}
        row["model_s"] = _median_time(lambda: call(graph)["forces"].sum().item(), dev,
                                      repeats, budget)
    except torch.cuda.OutOfMemoryError as exc:
        row["failed"] = "out of memory" + (": auto gave up" if "auto" in str(exc) else "")
    except Exception as exc:  # noqa: BLE001 - a row says why, the run goes on
        row["failed"] = f"{type(exc).__name__}: {str(exc)[:150]}"
    finally:
        del calc, call
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def table(rows: list) -> str:
    lines = ["| model | atoms | edges | chunk asked | chunk used | model ms | atoms/s | "
             "mem/atom KB | first call s | vs 2^17 | note |", "|" + "---|" * 11]
    base = {(r["model"], r["atoms"]): r for r in rows
            if r["asked"] == 2 ** 17 and "model_s" in r}
    for r in rows:
        if "model_s" not in r:
            lines.append(f"| {r['model']} | {r['atoms']} | {r['edges']} | {r['asked']} | | | | "
                         f"| | | {r.get('failed', '?')} |")
            continue
        b = base.get((r["model"], r["atoms"]))
        ratio = f"{b['model_s'] / r['model_s']:.2f}x" if b else ""
        used = "plain" if r["used"] == 0 else ("model default" if r["used"] is None
                                               else r["used"])
        note = json.dumps(r["fit"]) if "fit" in r else ""
        lines.append(f"| {r['model']} | {r['atoms']} | {r['edges']} | {r['asked']} | {used} | "
                     f"{1e3 * r['model_s']:.1f} | {r['atoms'] / r['model_s']:.3g} | "
                     f"{r.get('mem_bytes', float('nan')) / r['atoms'] / KB:.1f} | "
                     f"{r['first_s']:.2f} | {ratio} | {note} |")
    return "\n".join(lines)


def _chunk(text: str):
    return "auto" if text == "auto" else int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=["schnet", "painn", "mace", "nequip"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32000, 131072])
    parser.add_argument("--chunks", nargs="+", type=_chunk, default=[0, 2 ** 17, "auto"])
    parser.add_argument("--big", type=int, default=1_000_000, help="atoms of the auto-only runs")
    parser.add_argument("--big-models", nargs="*", default=["painn", "mace"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-repeats", type=int, default=1, help="timed calls at --big")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per timing")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="seconds: start no case after it")
    parser.add_argument("--out", default="autochunk.md")
    args = parser.parse_args(argv)
    import torch

    from geoff.graph import atoms_to_graph

    end = time.time() + args.deadline
    plan = [(n, m, c) for n in args.sizes for m in args.models for c in args.chunks]
    plan += [(args.big, m, "auto") for m in args.big_models]
    rows, graphs = [], {}
    for n, name, chunk in plan:
        if time.time() > end - 10:
            rows.append({"model": name, "atoms": n, "edges": "", "asked": chunk,
                         "failed": "deadline"})
            continue
        if n not in graphs:
            graphs.clear()  # one size's graph at a time (1M atoms: ~1 GB)
            atoms = structure("cu", n)
            graphs[n] = (len(atoms), atoms_to_graph(atoms, species=["Cu", "Zr"], cutoff=CUTOFF,
                                                    dtype=torch.float32, device=args.device))
        n_atoms, graph = graphs[n]
        t0 = time.time()
        repeats = args.big_repeats if n == args.big else args.repeats
        rows.append(run_case(name, graph, n_atoms, chunk, args.device, repeats, args.budget))
        print(f"[{time.time() - t0:.1f} s] {json.dumps(rows[-1])}", flush=True)
        Path(args.out).write_text(table(rows) + "\n")  # partial results survive a kill
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

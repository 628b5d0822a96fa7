"""torch.compile (geoff/compiled.py) against the eager model: compile time, agreement, speed.

    python benchmarks/compile_speed.py --device cpu --sizes 256 864 --out DIR   # 2-core CPU
    python benchmarks/compile_speed.py --device cuda --sizes 864 32000 131072 --graphs 2000 \\
        --kernels e3nn cueq --deadline 300 --out DIR                              # GPU
    python benchmarks/compile_speed.py --device cpu --sizes 32 --calls 2 --tiny --out DIR  # dry run

speed.py's models and hyper-parameters (``--tiny``: 8 features, for a dry run), FCC Cu
rattled 0.05 Å, cutoff 5 Å, float32, energy + forces of the model on a prepared graph,
``edge_chunk=0`` (the plain path: compile falls back to eager on the chunked one). One
subprocess per (model, kernels): a crash or out-of-memory ends that series only. Per model
the compiled model is built once and serves every size (dynamic shapes): ``compile_s`` is the
first compiled call at that size (compilation included; ~0 when no recompilation was
needed), ``graphs`` the graphs compiled so far. Then ``--calls`` rounds, each one eager call
and one compiled call (and, below ``--graphs`` atoms, one call each of the eager and of the
compiled model captured in CUDA graphs, ``geoff.cuda_graphs.GraphedModel``), interleaved so
that the load of a shared machine hits all alike; medians of the CUDA-synchronised wall times; ``ratio`` = median over rounds of
compiled / eager (< 1: compile pays), ``captured_ratio`` the same for the captured pair.
``max_dF`` = max |F_compiled - F_eager| (eV/Å).

Rows go to ``DIR/rows.jsonl`` as soon as measured, the table to ``DIR/compile.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import CUTOFF, MODELS, _sync, structure  # noqa: E402  speed.py's models, Cu

TINY = {"schnet": dict(n_features=8, n_layers=2), "painn": dict(n_features=8, n_layers=2),
        "nequip": dict(n_features=8, n_layers=2, l_max=2),
        "mace": dict(n_features=8, n_layers=2, l_max=2, hidden_l_max=1, correlation=3)}
COLUMNS = ("model", "kernels", "atoms", "edges", "compile_s", "graphs", "eager_ms",
           "compiled_ms", "ratio", "captured_eager_ms", "captured_compiled_ms",
           "captured_ratio", "max_dF", "failed")


def build(name: str, kernels: str, device: str, tiny: bool):
    """Frozen float32 model, plain path, with ``kernels``; random weights (seed 0)."""
    import torch

    from geoff.inference import frozen
    from geoff.potentials import build_model
    from geoff.potentials.chunking import set_edge_chunk

    torch.manual_seed(0)
    hparams = (TINY if tiny else MODELS)[name]
    model = frozen(build_model(name, species=["Cu", "Zr"], cutoff=CUTOFF, **hparams),
                   device, "float32")
    if kernels != "e3nn":
        from geoff.potentials.cueq import with_kernels

        with_kernels(model, kernels, torch.device(device))
    return set_edge_chunk(model, 0)


def timed(fn, dev) -> float:
    _sync(dev)
    t0 = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t0


def series(spec: dict) -> None:
    """One (model, kernels) over the sizes; prints one JSON row per size."""
    import torch

    from geoff.compiled import CompiledModel
    from geoff.cuda_graphs import GraphedModel
    from geoff.graph import atoms_to_graph

    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    model = build(spec["model"], spec["kernels"], spec["device"], spec["tiny"])
    compiled = CompiledModel(model)
    captured = {}  # below --graphs atoms: the eager and the compiled model in CUDA graphs
    if spec["graphs"]:
        captured = {"captured_eager": GraphedModel(model, max_atoms=spec["graphs"]),
                    "captured_compiled": GraphedModel(compiled, max_atoms=spec["graphs"])}
    for n, n_calls in zip(spec["sizes"], spec["calls"]):
        if time.time() > spec["deadline_at"]:
            break
        row = dict(model=spec["model"], kernels=spec["kernels"])
        try:
            graph = atoms_to_graph(structure("cu", n), model, dtype=torch.float32, device=dev)
            row.update(atoms=int(graph["positions"].shape[0]),
                       edges=int(graph["edge_index"].shape[1]))
            calls = {"eager": lambda: model(graph)["forces"].sum().item(),
                     "compiled": lambda: compiled(graph)["forces"].sum().item()}
            row["compile_s"] = timed(calls["compiled"], dev)
            row["graphs"] = compiled.stats["graphs"]
            row["max_dF"] = float((compiled(graph)["forces"] - model(graph)["forces"])
                                  .abs().max())
            for k, runner in captured.items() if row["atoms"] < spec["graphs"] else ():
                calls[k] = lambda runner=runner: runner(graph)["forces"].sum().item()
            for fn in calls.values():  # warm-up (the captured ones capture here)
                fn(), fn()
            times = {k: [] for k in calls}
            for _ in range(n_calls):
                for k, fn in calls.items():
                    times[k].append(timed(fn, dev))
                if time.time() > spec["deadline_at"]:
                    break
            eager = np.array(times["eager"])
            for k in calls:
                row[f"{k}_ms"] = 1e3 * float(np.median(times[k]))
            row["ratio"] = float(np.median(np.array(times["compiled"]) / eager))
            if "captured_eager" in calls:
                row["captured_ratio"] = float(np.median(np.array(times["captured_compiled"])
                                                        / np.array(times["captured_eager"])))
                row["captured_stats"] = {k: dict(r.stats) for k, r in captured.items()}
        except Exception as exc:  # noqa: BLE001 - the row says why, the series ends
            row["failed"] = f"{type(exc).__name__}: {exc}"[:200]
            print(json.dumps(row), flush=True)
            break
        print(json.dumps(row), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def table(rows: list, head: str) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
        return "" if v is None else str(v).replace("|", "/")

    lines = [head, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["schnet", "painn", "nequip", "mace"])
    parser.add_argument("--kernels", nargs="+", default=["e3nn"],
                        help="e3nn and/or cueq (NequIP- and MACE-style only)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 864])
    parser.add_argument("--calls", type=int, nargs="+", default=[20],
                        help="interleaved rounds (median): one value, or one per size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--graphs", type=int, default=0, metavar="MAX_ATOMS",
                        help="also the compiled model inside CUDA graphs (GraphedModel) below "
                             "this many atoms (0: not)")
    parser.add_argument("--tiny", action="store_true", help="8-feature models (a dry run)")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="seconds from now: no new size after it, a series stopped at it")
    parser.add_argument("--out", default=None, help="folder: rows.jsonl and compile.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        series(json.loads(args.one))
        return 0
    if len(args.calls) not in (1, len(args.sizes)):
        parser.error(f"--calls: one value or one per size ({len(args.sizes)}), got {args.calls}")
    args.calls = args.calls * len(args.sizes) if len(args.calls) == 1 else args.calls
    deadline_at = time.time() + args.deadline
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    import torch

    dev_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor()
    head = (f"machine: {platform.node()} ({dev_name or platform.machine()}), {os.cpu_count()} "
            f"cores, torch {torch.__version__}, threads {args.threads}, load average at start "
            f"{os.getloadavg()[0]:.1f}\ncommand: python benchmarks/compile_speed.py "
            f"{' '.join(sys.argv[1:])}")
    rows = []
    for name in args.models:
        for kernels in args.kernels if name in ("nequip", "mace") else ["e3nn"]:
            left = deadline_at - time.time()
            if left < 10:
                rows.append(dict(model=name, kernels=kernels, failed="deadline"))
                continue
            spec = dict(model=name, kernels=kernels, device=args.device, sizes=args.sizes,
                        calls=args.calls, threads=args.threads, graphs=args.graphs,
                        tiny=args.tiny, deadline_at=deadline_at - 5)
            try:
                proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                                      capture_output=True, text=True,
                                      timeout=None if left == float("inf") else left)
                stdout, err = proc.stdout, proc.stderr
            except subprocess.TimeoutExpired as exc:
                stdout, err = exc.stdout or "", "deadline"
                stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            got = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
            if not got or ("failed" not in got[-1] and len(got) < len(args.sizes)):
                why = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
                got.append(dict(model=name, kernels=kernels,
                                failed=(why[-1] if why else "no output")[:200]))
            for row in got:
                print(json.dumps(row), file=sys.stderr, flush=True)
            rows += got
            if out:
                with open(out / "rows.jsonl", "a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in got)
                (out / "compile.md").write_text(table(rows, head))
    print(table(rows, head + f"\nload average at the end {os.getloadavg()[0]:.1f}"))
    if out:
        (out / "compile.md").write_text(table(rows, head + "\nload average at the end "
                                              f"{os.getloadavg()[0]:.1f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

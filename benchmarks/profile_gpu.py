"""Where one energy+forces model call spends its GPU time: geoff's or a peer's, same structure.

    python benchmarks/profile_gpu.py geoff --model mace --kernels cueq [--compile] --atoms 32000
    PYTHONPATH=$GEOFF_PEERS/mace_cueq:benchmarks/peers:benchmarks:$PYTHONPATH \\
        python benchmarks/profile_gpu.py peer --module mace_peer --cueq --atoms 32000

FCC Cu rattled 0.05 Å, cutoff 5 Å, the hyper-parameters of ``speed.py``, the model called on
a prepared graph (as ``speed.py``'s "model" column). Prints the CUDA-synchronised median (ms),
then the torch profiler's operators and kernels by self device time (CPU time on the CPU) over ``--calls`` calls,
as a percentage of the total, so that two runs can be read side by side.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def geoff_call(args):
    from geoff.calculators.ase import GeoffCalculator
    from geoff.potentials import build_model
    from geoff.potentials.chunking import set_edge_chunk

    from speed import ARCHITECTURE, CUTOFF, MODELS, structure

    torch.manual_seed(0)
    model = build_model(ARCHITECTURE.get(args.model, args.model), species=["Cu", "Zr"],
                        cutoff=CUTOFF, **MODELS[args.model])
    pairs = {"auto": "auto", "on": True, "off": False}[args.edge_pairs]
    calc = GeoffCalculator(model, device=args.device, dtype=args.dtype, kernels=args.kernels,
                           compile=args.compile, edge_chunk="auto", edge_pairs=pairs)
    atoms = structure("cu", args.atoms)
    graph = calc.graph(atoms)  # the calculator's graph (edge pairs included)
    chunk = calc.auto_chunk.chunk_for(graph)
    if chunk is not None:
        set_edge_chunk(calc.model, chunk)
    print(f"geoff {args.model} kernels={args.kernels} compile={args.compile} chunk={chunk} "
          f"edge pairs={'pair_first' in graph} "
          f"atoms {len(atoms)} edges {graph['edge_index'].shape[1]}")
    return lambda: calc.run_model(graph)["forces"].sum().item()


def peer_call(args):
    import importlib

    module = importlib.import_module(args.module)
    spec = {"device": args.device, "dtype": args.dtype, "kind": "cu", "n": args.atoms,
            "cueq": args.cueq}
    model_call, _, n_atoms, n_edges, *_ = module.prepare(spec)
    print(f"peer {args.module} cueq={args.cueq} atoms {n_atoms} edges {n_edges}")
    return model_call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("who", choices=["geoff", "peer"])
    parser.add_argument("--model", default="mace", help="geoff model (speed.py's MODELS)")
    parser.add_argument("--kernels", default="cueq", help="geoff: e3nn, cueq or auto")
    parser.add_argument("--compile", action="store_true", help="geoff: torch.compile")
    parser.add_argument("--edge-pairs", default="auto", choices=["auto", "on", "off"],
                        help="geoff: GeoffCalculator(edge_pairs=...) (auto: on the CPU only)")
    parser.add_argument("--module", default="mace_peer", help="peer runner module")
    parser.add_argument("--cueq", action="store_true", help="peer: cuEquivariance on")
    parser.add_argument("--atoms", type=int, default=32000)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--device", default="cuda", help="cuda (cpu: a dry run)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--shapes", type=int, default=0, metavar="K",
                        help="also the K operators with the most self device time, by input "
                             "shapes (which tensor a copy or a matmul moves)")
    args = parser.parse_args(argv)
    call = geoff_call(args) if args.who == "geoff" else peer_call(args)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(3):
        call()
    times = []
    for _ in range(args.calls):
        sync()
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else float("nan")
    print(f"median {1e3 * np.median(times):.2f} ms, peak {peak:.0f} MiB")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                 record_shapes=args.shapes > 0) as prof:
        for _ in range(args.calls):
            call()
        sync()
    events = prof.key_averages()
    key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") \
        else "self_cuda_time_total"
    if args.device == "cpu":
        key = "self_cpu_time_total"
    # Operator rows and the kernel rows under them both carry the kernels' time: the total
    # sums the kernels alone (DeviceType.CUDA events), so shares add up to 100 % once.
    kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
    total = sum(getattr(e, key) for e in (kernels or events)) or 1.0
    print(f"device time per call {total / 1e3 / args.calls:.2f} ms (kernels); top rows "
          "by self device time (operators and their kernels both listed):")
    rows = sorted(events, key=lambda e: -getattr(e, key))[: args.top]
    for e in rows:
        share = 100 * getattr(e, key) / total
        print(f"{share:6.2f} %  {getattr(e, key) / 1e3 / args.calls:8.3f} ms  "
              f"x{e.count // args.calls:<5d} {e.key[:110]}")
    if args.shapes:
        print(f"operators by input shapes (top {args.shapes}):")
        ops = [e for e in prof.key_averages(group_by_input_shape=True)
               if e.key.startswith("aten::")]
        for e in sorted(ops, key=lambda e: -getattr(e, key))[: args.shapes]:
            print(f"{100 * getattr(e, key) / total:6.2f} %  "
                  f"{getattr(e, key) / 1e3 / args.calls:8.3f} ms  x{e.count // args.calls:<5d} "
                  f"{e.key} {str(e.input_shapes)[:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

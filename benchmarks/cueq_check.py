"""cuEquivariance kernels against the e3nn path, without pytest (for the GPU machine).

    python benchmarks/cueq_check.py --device cuda [--atoms 864] [--out check.json]
    python benchmarks/cueq_check.py --device cuda --graphs   # + CUDA graphs, eager vs captured

For NequIP-style and MACE-style (speed.py's hyper-parameters), float64 and float32, on a
rattled FCC Cu cell with a few Zr: energy, per-atom energies, forces and stress of
``kernels="cueq"`` (``geoff.potentials.cueq``, shared weights) against the e3nn path, on
the plain path and with edge chunking. Prints one line per case and PASS/FAIL: float64 must
agree to 1e-10 relative to the largest value; in float32 both paths are compared with the
e3nn path in float64, and cuEq's error must be at most 4x e3nn's own float32 error (+1e-7):
round-off, not a different model. Exit status 1 on any FAIL. On the CPU it runs cuEquivariance's "naive" method (slow: use few atoms).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from speed import CUTOFF, MODELS, _median_time, structure  # benchmarks/speed.py

TOLERANCE = 1e-10  # float64, relative to the largest value


def compare(name: str, dtype: str, device: str, n_atoms: int) -> list:
    from geoff.graph import atoms_to_graph
    from geoff.inference import frozen, torch_dtype
    from geoff.potentials import build_model
    from geoff.potentials.chunking import set_edge_chunk
    from geoff.potentials.cueq import accelerate

    torch.manual_seed(0)
    model = build_model(name, species=["Cu", "Zr"], cutoff=CUTOFF, **MODELS[name])
    model = frozen(model, device, dtype)
    atoms = structure("cu", n_atoms)
    symbols = atoms.get_chemical_symbols()
    symbols[::7] = ["Zr"] * len(symbols[::7])
    atoms.set_chemical_symbols(symbols)
    graph = atoms_to_graph(atoms, model, dtype=torch_dtype(dtype), device=torch.device(device))
    n_edges = int(graph["edge_index"].shape[1])
    ref = set_edge_chunk(model, 0)(graph, compute_stress=True)
    exact = ref  # float32: both paths are judged against the e3nn path in float64
    if dtype == "float32":
        exact = frozen(model, device, "float64")(
            atoms_to_graph(atoms, model, dtype=torch.float64, device=torch.device(device)),
            compute_stress=True)
    start = time.perf_counter()
    fast = accelerate(frozen(model, device, dtype))
    build_s = time.perf_counter() - start
    methods = sorted({m.kernel.method for m in fast.modules() if hasattr(m, "kernel")})
    rows = []
    for chunk in (0, max(n_edges // 5, 1)):
        out = set_edge_chunk(fast, chunk)(graph, compute_stress=True)
        errors, ok = {}, True
        for k in ("energy", "energies", "forces", "stress"):
            scale = float(exact[k].abs().max().clamp_min(1e-30))
            err = float((out[k].double() - exact[k].double()).abs().max()) / scale
            if dtype == "float64":
                ok &= err <= TOLERANCE
                errors[k] = f"{err:.1e}"
            else:  # float32 round-off: no worse than the e3nn path's own float32 error
                own = float((ref[k].double() - exact[k].double()).abs().max()) / scale
                ok &= err <= 4 * own + 1e-7
                errors[k] = f"{err:.1e} (e3nn {own:.1e})"
        rows.append(dict(model=name, dtype=dtype, atoms=len(atoms), edges=n_edges,
                         edge_chunk=chunk, methods=methods, build_s=build_s,
                         rel_error_vs_float64_e3nn=errors, ok=bool(ok)))
        print(f"{'PASS' if ok else 'FAIL'} {name} {dtype} atoms={len(atoms)} chunk={chunk} "
              f"methods={methods} build={build_s:.1f}s " +
              " ".join(f"{k}={v}" for k, v in errors.items()), flush=True)
    return rows


def graphs_rows(name: str, device: str, n_atoms: int) -> list:
    """864-atom model call, float32: e3nn vs cuEq, eager vs CUDA graphs (geoff.cuda_graphs)."""
    from geoff.cuda_graphs import GraphedModel
    from geoff.graph import atoms_to_graph
    from geoff.inference import frozen
    from geoff.potentials import build_model
    from geoff.potentials.chunking import set_edge_chunk
    from geoff.potentials.cueq import accelerate

    torch.manual_seed(0)
    built = build_model(name, species=["Cu", "Zr"], cutoff=CUTOFF, **MODELS[name])
    dev = torch.device(device)
    graph = None
    rows = []
    for kernels in ("e3nn", "cueq"):
        model = set_edge_chunk(frozen(built, device, "float32"), 0)
        if kernels == "cueq":
            accelerate(model)
        graph = graph or atoms_to_graph(structure("cu", n_atoms), model, dtype=torch.float32,
                                        device=dev)
        runner = GraphedModel(model, max_atoms=None, pad_only=dev.type != "cuda")
        ref = model(graph)
        out = runner(graph)
        row = dict(model=name, kernels=kernels, atoms=int(graph["positions"].shape[0]),
                   captured_vs_eager=float((out["forces"] - ref["forces"]).abs().max()))
        for label, fn in (("eager", model), ("captured", runner)):
            row[f"{label}_ms"] = 1e3 * _median_time(lambda fn=fn: fn(graph)["forces"].sum().item(),
                                                    dev, 30, 3.0)
        row.update(stats=dict(runner.stats), failed=list(runner.failed.values())[:1])
        print(f"GRAPHS {row}", flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--atoms", type=int, default=864)
    parser.add_argument("--models", nargs="+", default=["mace", "nequip"])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--out", default=None, help="write the rows (JSON) here")
    parser.add_argument("--graphs", action="store_true",
                        help="instead: time eager vs CUDA graphs, e3nn vs cuEq (float32)")
    args = parser.parse_args(argv)
    if args.graphs:
        rows = [r for name in args.models for r in graphs_rows(name, args.device, args.atoms)]
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
        return 0
    rows = []
    for name in args.models:
        for dtype in args.dtypes:
            try:
                rows += compare(name, dtype, args.device, args.atoms)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next case
                print(f"FAIL {name} {dtype}: {type(exc).__name__}: {exc}", flush=True)
                rows.append(dict(model=name, dtype=dtype, ok=False, error=repr(exc)))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

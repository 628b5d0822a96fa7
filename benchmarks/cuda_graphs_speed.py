"""CUDA graphs (geoff/cuda_graphs.py) against the eager model: time, agreement, where it pays.

    python benchmarks/cuda_graphs_speed.py --device cuda --out DIR --deadline EPOCH_S
    python benchmarks/cuda_graphs_speed.py --device cpu --sizes 32 --replicas 2 --out DIR  # dry run

Three sections, each row written to ``DIR/rows.json`` as soon as it is measured (a run
stopped by its deadline keeps what finished) and the Markdown tables to ``DIR/cuda_graphs.md``:

1. ``check``: every model the capture supports (small hyper-parameters, float64), captured
   against eager for energy, forces, stress and a direct head ("both"), max |difference|.
2. ``size``: speed.py's models and hyper-parameters, FCC Cu rattled 0.05 Å, float32, cutoff
   5 Å, per size: the model on a prepared graph (eager, captured), the calculator call
   (eager, captured; fresh neighbour list, and a Verlet list with a 1 Å skin), the first
   (capturing) call, and max |captured - eager| of energy and forces. ``edge_chunk=0`` for
   both paths (the chunked path cannot be captured; at these sizes it is not needed).
   Calculator calls alternate between two position sets 0.002 Å apart (a new result each
   call, the skin list reused).
3. ``replicas``: 9-atom ethanol, R replicas as one batched graph (``BatchedForces``), one
   BAOAB Langevin step per call (``make_batched_integrator``), eager and captured.

Medians of CUDA-synchronised wall times; on the CPU the captured column runs the padded path
without capture (``pad_only``), a check of the script only.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import MODELS, _median_time, _sync, structure  # noqa: E402  speed.py's models, Cu

from geoff.cuda_graphs import GraphedModel  # noqa: E402

CUTOFF = 5.0
CHECK_MODELS = {  # small, float64: the agreement check of every captured model
    "schnet": dict(n_features=16, n_layers=2), "painn": dict(n_features=16, n_layers=2),
    "egnn": dict(n_features=16, n_layers=2), "symgnn": dict(n_features=16, n_layers=2),
    "nequip": dict(n_features=8, n_layers=2, l_max=2),
    "mace": dict(n_features=8, n_layers=2, l_max=2, correlation=3),
}


def median_ms(fn, device, repeats=30, budget_s=3.0) -> float:
    return 1e3 * _median_time(fn, device, repeats, budget_s)


def runner_for(model, device):
    return GraphedModel(model, max_atoms=None, pad_only=device.type != "cuda")


def max_diff(a: dict, b: dict, keys) -> dict:
    return {k: float((a[k].detach().double() - b[k].detach().double()).abs().max())
            for k in keys if k in b}


def check_rows(device):
    """Captured against eager, float64, every capturable model, stress and a direct head."""
    from geoff.graph import atoms_to_graph
    from geoff.inference import frozen
    from geoff.potentials import build_model

    atoms = structure("cu", 108)
    atoms.set_chemical_symbols(["Cu", "Zr"] * 54)
    rows = []
    for name, hp in CHECK_MODELS.items():
        torch.manual_seed(0)
        head = "both" if name in ("schnet", "painn", "mace") else "conservative"
        model = frozen(build_model(name, species=["Cu", "Zr"], cutoff=CUTOFF, force_head=head,
                                   **hp), device, "float64")
        runner = runner_for(model, device)
        graph = atoms_to_graph(atoms, model, device=device)
        ref = model(graph, compute_stress=True)
        out = runner(graph, compute_stress=True)
        again = runner(graph, compute_stress=True)  # a replay of the captured graph
        keys = ["energy", "forces", "stress", "direct_forces"]
        rows.append({"section": "check", "model": name, "force_head": head,
                     "max_abs_diff": max_diff(out, ref, keys),
                     "replay_diff": max_diff(again, ref, keys), "stats": dict(runner.stats),
                     "failed": list(runner.failed.values())})
    return rows


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def size_row(name, n_atoms, device, dtype="float32"):
    from geoff.calculators import GeoffCalculator
    from geoff.graph import atoms_to_graph
    from geoff.inference import frozen
    from geoff.potentials import build_model
    from geoff.potentials.chunking import set_edge_chunk

    torch.manual_seed(0)
    model = build_model(name, species=["Cu", "Zr"], cutoff=CUTOFF, **MODELS[name])
    atoms = structure("cu", n_atoms)
    row = {"section": "size", "model": name, "atoms": len(atoms), "dtype": dtype}
    eager_model = set_edge_chunk(frozen(model, device, dtype), 0)
    runner = runner_for(eager_model, device)
    graph = atoms_to_graph(atoms, eager_model, device=device)
    row["edges"] = int(graph["edge_index"].shape[1])
    ref = eager_model(graph)
    _sync(device)
    t0 = time.perf_counter()
    out = runner(graph)
    _sync(device)
    row["first_captured_call_ms"] = 1e3 * (time.perf_counter() - t0)
    row["model_max_abs_diff"] = max_diff(out, ref, ["energy", "forces"])
    row["model_eager_ms"] = median_ms(lambda: eager_model(graph)["forces"].sum().item(), device)
    row["model_captured_ms"] = median_ms(lambda: runner(graph)["forces"].sum().item(), device)
    row["runner_stats"] = dict(runner.stats)
    row["runner_failed"] = list(runner.failed.values())
    del runner, out  # one captured graph's memory at a time (8,000 atoms: ~25 GB each)
    _free(device)
    base = atoms.positions.copy()
    moved = base + np.random.default_rng(1).normal(0, 0.002, base.shape)
    results = {}
    for label, graphs, skin in [("eager", False, 0.0), ("captured", True, 0.0),
                                ("eager_skin", False, 1.0), ("captured_skin", True, 1.0)]:
        calc = GeoffCalculator(model, device=str(device), dtype=dtype, skin=skin,
                               edge_chunk=0, cuda_graphs=graphs)
        if graphs and device.type != "cuda":
            calc.run_model = GraphedModel(calc.model, pad_only=True)
        state = [0]

        def call(calc=calc, state=state):
            state[0] ^= 1
            atoms.positions = moved if state[0] else base
            calc.calculate(atoms, ["energy", "forces"], ["positions"])

        row[f"calc_{label}_ms"] = median_ms(call, device)
        atoms.positions = base
        calc.calculate(atoms, ["energy", "forces"], ["positions"])
        results[label] = {k: torch.as_tensor(np.asarray(calc.results[k]))
                          for k in ("energy", "forces")}
        if label == "captured":
            row["calc_captured_stats"] = dict(getattr(calc.run_model, "stats", {}))
        del calc, call
        _free(device)
    row["calc_max_abs_diff"] = max_diff(results["captured"], results["eager"],
                                        ["energy", "forces"])
    row["calc_skin_max_abs_diff"] = max_diff(results["captured_skin"], results["eager"],
                                             ["energy", "forces"])
    return row


def replica_row(name, replicas, device, steps=20, dtype="float32"):
    """ms per batched Langevin step of R ethanol replicas, eager and captured."""
    from replicas_speed import ethanol

    from geoff.md.recording import initial_velocities
    from geoff.md.replica_forces import BatchedForces
    from geoff.md.replica_integrators import make_batched_integrator
    from geoff.potentials import build_model

    torch.manual_seed(0)
    atoms = ethanol()
    model = build_model(name, species=["C", "H", "O"], cutoff=CUTOFF)
    row = {"section": "replicas", "model": name, "replicas": replicas, "atoms": len(atoms),
           "dtype": dtype}
    final = {}
    for label, graphs in (("eager", False), ("captured", True)):
        forces = BatchedForces(model, atoms, str(device), dtype, cuda_graphs=graphs)
        if graphs and device.type != "cuda":
            forces.run_model = GraphedModel(forces.model, pad_only=True)
        starts = []
        for r in range(replicas):
            a = atoms.copy()
            initial_velocities(a, 300.0, r)
            starts.append(a)
        integ = make_batched_integrator(
            "langevin", [a.positions for a in starts], [a.get_momenta() for a in starts],
            atoms.get_masses(), forces, 0.5, [300.0] * replicas, 100.0,
            list(range(replicas)), 3 * len(atoms))
        active = np.arange(replicas)
        for _ in range(3):  # warm-up (and the capture)
            integ.step(active)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            integ.step(active)
        _sync(device)
        ms = 1e3 * (time.perf_counter() - t0) / steps
        row[f"{label}_step_ms"] = ms
        row[f"{label}_replica_steps_per_s"] = replicas / ms * 1e3
        x = np.stack([a.positions for a in starts])
        final[label] = forces(x)  # the same positions through both paths
        row[f"{label}_stats"] = dict(getattr(forces.run_model, "stats", {}))
    row["max_abs_diff"] = {k: float(np.nanmax(np.abs(a - b))) for k, a, b in
                           zip(("energy", "forces"), final["captured"], final["eager"])}
    return row


def _fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:.1e}" for k, v in d.items())


def _measured(rows, section, size_key, lines):
    """The rows of ``section`` that were measured; failed ones become an error line."""
    for r in (r for r in rows if r["section"] == section):
        if "error" in r:
            lines.append(f"| {r['model']} | {r[size_key]} | error: {r['error'][:150]} |")
        else:
            yield r


def tables(rows, header) -> str:
    out = [header, "", "## Check: captured vs eager, float64, max |difference|", "",
           "| model | head | captured vs eager | replay vs eager | captures / failed |",
           "|---|---|---|---|---|"]
    for r in (r for r in rows if r["section"] == "check"):
        s = r["stats"]
        out.append(f"| {r['model']} | {r['force_head']} | {_fmt(r['max_abs_diff'])} | "
                   f"{_fmt(r['replay_diff'])} | {s['captures']} / {s['failed']} "
                   f"{'; '.join(r['failed'])[:200]} |")
    out += ["", "## Energy + forces per call, FCC Cu, float32 (ms, medians)", "",
            "| model | atoms | edges | model eager | model captured | speed-up | calc eager | "
            "calc captured | calc eager, skin 1 Å | calc captured, skin 1 Å | first call | "
            "max abs diff E, F (model) | (calc) |", "|" + "---|" * 13]
    for r in _measured(rows, "size", "atoms", out):
        fail = f" (eager: {r['runner_failed'][0][:80]})" if r["runner_failed"] else ""
        out.append(
            f"| {r['model']} | {r['atoms']} | {r['edges']} | {r['model_eager_ms']:.2f} | "
            f"{r['model_captured_ms']:.2f}{fail} | "
            f"{r['model_eager_ms'] / r['model_captured_ms']:.1f}x | {r['calc_eager_ms']:.2f} | "
            f"{r['calc_captured_ms']:.2f} | {r['calc_eager_skin_ms']:.2f} | "
            f"{r['calc_captured_skin_ms']:.2f} | {r['first_captured_call_ms']:.0f} | "
            f"{_fmt(r['model_max_abs_diff'])} | {_fmt(r['calc_max_abs_diff'])} |")
    out += ["", "## Batched replicas: 9-atom ethanol, BAOAB Langevin, float32", "",
            "| model | R | eager ms/step | captured ms/step | speed-up | eager replica-steps/s | "
            "captured replica-steps/s | max abs diff E, F |", "|" + "---|" * 8]
    for r in _measured(rows, "replicas", "replicas", out):
        out.append(f"| {r['model']} | {r['replicas']} | {r['eager_step_ms']:.2f} | "
                   f"{r['captured_step_ms']:.2f} | "
                   f"{r['eager_step_ms'] / r['captured_step_ms']:.1f}x | "
                   f"{r['eager_replica_steps_per_s']:.0f} | "
                   f"{r['captured_replica_steps_per_s']:.0f} | {_fmt(r['max_abs_diff'])} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--sizes", type=int, nargs="+", default=[864, 32, 256, 2048, 8000])
    p.add_argument("--replicas", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--replica-models", nargs="+", default=["schnet", "mace"])
    p.add_argument("--sections", nargs="+", default=["check", "size", "replicas"])
    p.add_argument("--deadline", type=float, default=None, help="epoch seconds: no new row after")
    p.add_argument("--out", default=".")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    header = (f"# CUDA graphs: captured vs eager\n\ndevice {args.device} ({where}), torch "
              f"{torch.__version__}, command: python benchmarks/cuda_graphs_speed.py "
              f"{' '.join(sys.argv[1:] if argv is None else argv)}")
    rows = []

    def save():
        (out / "rows.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
        (out / "cuda_graphs.md").write_text(tables(rows, header))

    def late() -> bool:
        return args.deadline is not None and time.time() > args.deadline

    jobs = []
    if "check" in args.sections:
        jobs.append(("check", lambda: check_rows(device), {}))
    sizes = [(n, name) for n in args.sizes for name in args.models]
    sizes = sizes if "size" in args.sections else []
    # the first size (864 atoms: the issue's target) for every model, then the replicas,
    # then the other sizes: what matters most finishes before a deadline
    for n, name in sizes[:len(args.models)]:
        jobs.append(("size", lambda name=name, n=n: [size_row(name, n, device)],
                     {"section": "size", "model": name, "atoms": n}))
    if "replicas" in args.sections:
        for name in args.replica_models:
            for r in args.replicas:
                jobs.append(("replicas", lambda name=name, r=r: [replica_row(name, r, device)],
                             {"section": "replicas", "model": name, "replicas": r}))
    for n, name in sizes[len(args.models):]:
        jobs.append(("size", lambda name=name, n=n: [size_row(name, n, device)],
                     {"section": "size", "model": name, "atoms": n}))
    for section, job, ident in jobs:
        if late():
            print(f"deadline: skipped {section} {ident}", flush=True)
            continue
        t0 = time.time()
        try:
            new = job()
        except Exception as exc:  # one failed row must not lose the others
            new = [{**ident, "error": f"{type(exc).__name__}: {exc}"}] if ident else []
            print(f"FAILED {section} {ident}: {type(exc).__name__}: {exc}", flush=True)
        rows.extend(new)
        for r in new:
            print(f"[{time.time() - t0:.1f} s] {json.dumps(r)}", flush=True)
        save()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    save()
    print(tables(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where one ASE calculator call spends its time: neighbour list, graph, model, the rest.

    python benchmarks/profile_calc.py [--sizes 256 864 4000] [--models schnet painn mace]
        [--threads 2] [--top 8] [--device cuda] [--skins 0 1.0] [--md-steps 20]
        [--cuda-graphs auto] [--compile] [--skin-edges keep] [--profile-md]

FCC Cu rattled 0.05 Å, cutoff 5 Å, float32, energy + forces, the hyper-parameters of
``speed.py`` (MACE at 64 channels, l_max 3). Prints medians (ms) per part and the torch
profiler's top operators (self CPU time) at the middle size: of the model call on the CPU,
of a whole calculator call on a new structure on CUDA (where the host-side overhead of small
systems is). ``calc`` is a call repeated on the same atoms (the list reused); ``new-structure
calc`` a call on the atoms moved as a whole by 0.6 Å, a different way each call, so that the
list is built afresh every time, as for a new structure of that size.
With ``--skins``: the median time of one velocity-Verlet step (1 fs, 300 K, ``--md-steps``
steps, ASE) with ``GeoffCalculator(skin=S)`` per skin, beside the model's time: what an MD
run pays per step when the neighbour list is reused while no atom moved more than S / 2.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from speed import MODELS, SWITCH, structure


SYNC = [lambda: None]  # torch.cuda.synchronize on CUDA


def median_ms(fn, repeats=3):
    fn()
    out = []
    for _ in range(repeats):
        SYNC[0]()
        t0 = time.perf_counter()
        fn()
        SYNC[0]()
        out.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(out))


def translated(atoms):
    """Copies of ``atoms`` moved as a whole by 0.6 Å along x, y, z in turn, forever: each call
    on the next one finds every atom moved beyond any skin's half, so the calculator builds
    its neighbour list afresh, as for a new structure of the same size."""
    k = 0
    while True:
        moved = atoms.copy()
        moved.positions += 0.6 * np.eye(3)[k % 3]
        k += 1
        yield moved


def calculator_options(args) -> dict:
    """The GeoffCalculator knobs this script's command line sets."""
    return {"cuda_graphs": SWITCH[args.cuda_graphs], "compile": args.compile}


def md_options(args) -> dict:
    """The knobs of the MD-step columns (a skin's list filtered or kept whole)."""
    return dict(calculator_options(args), skin_edges=args.skin_edges)


def new_structure_parts(calc, structures, calls: int) -> dict:
    """Median ms of a new-structure call's parts (``structures``: an iterator such as
    ``translated``): the list's search (``NeighbourCache._build``), its filter and shortest
    edge (``_edges``), the rest of the graph (checks, tensors), the model, the rest of
    ``calculate``; each part synchronised at its end."""
    cache, spent = calc.neighbour_cache, {}
    # a kept-Graph calculator reaches its graph through the StepGraph's own reference
    saved = [(calc.step_graph, "build") if calc.step_graph is not None else (calc, "graph"),
             (calc, "auto_chunk" if calc.auto_chunk else "run_model")]
    if cache is not None:
        saved += [(cache, "_build"), (cache, "_edges")]
    originals = [(obj, name, getattr(obj, name)) for obj, name in saved]
    for obj, name, fn in originals:
        setattr(obj, name, _timed(spent, "graph" if name == "build" else name, fn))
    if getattr(calc, "captured_call", None) is not None:  # search + model in one replay
        originals.append((calc, "captured_call", calc.captured_call))
        calc.captured_call = _Timed(calc.captured_call, spent, "captured")
    rows = []
    try:
        for _ in range(calls):
            spent.clear()
            SYNC[0]()
            t0 = time.perf_counter()
            calc.calculate(next(structures), ["energy", "forces"], ["positions"])
            SYNC[0]()
            total = time.perf_counter() - t0
            lists = spent.get("_build", 0.0) + spent.get("_edges", 0.0)
            model = spent.get("auto_chunk", 0.0) + spent.get("run_model", 0.0)
            captured = spent.get("captured", 0.0)
            rows.append({"call": total, "list search": spent.get("_build", 0.0),
                         "list filter": spent.get("_edges", 0.0),
                         "graph rest": spent.get("graph", 0.0) - lists, "model": model,
                         "captured search + model": captured,
                         "calculate rest": total - spent.get("graph", 0.0) - model - captured})
    finally:
        for obj, name, fn in originals:
            setattr(obj, name, fn)
    return {k: 1e3 * float(np.median([r[k] for r in rows])) for k in rows[0]}


class _Timed:
    """A stand-in for ``inner`` whose calls add their synchronised time to ``spent[key]``;
    its other attributes are ``inner``'s."""

    def __init__(self, inner, spent: dict, key: str):
        self.inner, self.call = inner, _timed(spent, key, inner)

    def __call__(self, *args, **kwargs):
        return self.call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _timed(spent: dict, key: str, fn):
    """``fn`` adding its synchronised wall time (s) to ``spent[key]``."""
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        SYNC[0]()
        spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
        return out
    return wrapper


def md_step_parts(dyn, steps: int) -> dict:
    """Median ms of an MD step's parts, timed inside real steps: the calculator's graph
    (neighbour list reuse, checks, tensors), its model call (``auto_chunk`` or
    ``run_model``), the rest of ``calculate`` (results to numpy), and ASE outside the
    calculator. Each part ends with a synchronisation, so the parts add up to a little more
    than an untimed step."""
    calc = dyn.atoms.calc
    spent = {}

    def timed(key, fn):
        return _timed(spent, key, fn)

    captured = getattr(calc, "captured_call", None)  # (absent in trees before it)
    saved = calc.graph, calc.calculate, calc.auto_chunk, calc.run_model, calc.step_graph
    calc.graph = timed("graph", calc.graph)
    if calc.step_graph is not None:  # a Graph kept between steps: its call is the graph part
        calc.step_graph = _Timed(calc.step_graph, spent, "graph")
    if captured is not None:  # search and model in one replay (cuda_graphs on)
        calc.captured_call = _Timed(captured, spent, "captured")
    if calc.auto_chunk is not None:
        calc.auto_chunk = timed("model", calc.auto_chunk)
    else:
        calc.run_model = timed("model", calc.run_model)
    calc.calculate = timed("calculate", calc.calculate)
    rows = []
    try:
        for _ in range(steps):
            spent.clear()
            SYNC[0]()
            t0 = time.perf_counter()
            dyn.run(1)
            SYNC[0]()
            total = time.perf_counter() - t0
            inside = sum(spent.get(k, 0.0) for k in ("graph", "model", "captured"))
            rows.append({"step": total, "graph": spent.get("graph", 0.0),
                         "model": spent.get("model", 0.0),
                         "captured search + model": spent.get("captured", 0.0),
                         "calculate rest": spent.get("calculate", 0.0) - inside,
                         "ASE": total - spent.get("calculate", 0.0)})
    finally:
        calc.graph, calc.calculate, calc.auto_chunk, calc.run_model, calc.step_graph = saved
        if captured is not None:
            calc.captured_call = captured
    return {k: 1e3 * float(np.median([r[k] for r in rows])) for k in rows[0]}


def md_step_ms(name, atoms, args, skin, profile=False) -> float:
    """Median ms of one velocity-Verlet step (1 fs, 300 K) with ``GeoffCalculator(skin=)``.
    ``profile``: also print the step's parts (``md_step_parts``) and the torch profiler's
    top operators of one step (host syncs show up as ``cudaStreamSynchronize`` /
    ``cudaMemcpyAsync``)."""
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    from geoff.calculators.ase import GeoffCalculator
    from geoff.potentials import build_model

    torch.manual_seed(0)
    atoms = atoms.copy()
    atoms.calc = GeoffCalculator(build_model(name, ["Cu", "Zr"], 5.0, **MODELS[name]),
                                 device=args.device, skin=skin, **md_options(args))
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=300, rng=np.random.default_rng(0))  # ase >= 3.29 name
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(2)  # warm-up (the first build, allocations)
    times = []
    for _ in range(args.md_steps):
        SYNC[0]()
        t0 = time.perf_counter()
        dyn.run(1)
        SYNC[0]()
        times.append(time.perf_counter() - t0)
    step = 1e3 * float(np.median(times))
    if profile:
        parts = md_step_parts(dyn, args.md_steps)
        calc = atoms.calc
        print(f"\n{name}, {len(atoms)} atoms, MD step with skin {skin:g}: {step:.2f} ms; "
              "medians of steps timed in parts (synchronised at each part's end): "
              + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
              + f" ms (list builds: {calc.neighbour_cache.builds if calc.neighbour_cache else '-'})")
        activities = [torch.profiler.ProfilerActivity.CPU]
        if args.device.startswith("cuda"):
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            dyn.run(1)
            SYNC[0]()
        print("```")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top,
                                        max_name_column_width=40))
        print("```\n")
    if profile and args.cprofile:  # the Python around the model, function by function
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        dyn.run(args.md_steps)
        SYNC[0]()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.top)
        print(f"{name}, {len(atoms)} atoms, {args.md_steps} MD steps under cProfile "
              f"(functions by own time):\n```\n{text.getvalue().strip()}\n```\n")
    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 864, 4000])
    parser.add_argument("--models", nargs="+", default=["schnet", "painn", "mace"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skins", nargs="*", type=float, default=[],
                        help="MD-step columns, one per GeoffCalculator(skin=S) (Å)")
    parser.add_argument("--md-steps", type=int, default=20)
    parser.add_argument("--cuda-graphs", default="off", choices=["off", "auto", "on"],
                        help="GeoffCalculator(cuda_graphs=...): off (this script's "
                             "default, eager), auto (the calculator's default), on")
    parser.add_argument("--compile", action="store_true", help="GeoffCalculator(compile=True)")
    parser.add_argument("--skin-edges", default="filter", choices=["auto", "filter", "keep"],
                        help="GeoffCalculator(skin_edges=...) in the MD-step columns")
    parser.add_argument("--profile-md", action="store_true",
                        help="with --skins: the first skin's MD step in parts, and profiled")
    parser.add_argument("--cprofile", action="store_true",
                        help="with --profile-md: also the Python functions of --md-steps "
                             "steps by their own time (cProfile, --top rows)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda:
        SYNC[0] = torch.cuda.synchronize
    from geoff.calculators.ase import GeoffCalculator
    from geoff.graph import neighbour_list
    from geoff.neighbours import torch_neighbour_list
    from geoff.potentials import build_model

    md_heads = "".join(f" MD step ms, skin {s:g} | step/model, skin {s:g} |"
                       for s in args.skins)
    print("| model | atoms | matscipy list ms | torch list ms | graph ms | model ms | calc ms "
          "| calc/model | new-structure calc ms | new/model |" + md_heads)
    print("|---|---|---|---|---|---|---|---|---|---|" + "---|---|" * len(args.skins))
    for name in args.models:
        torch.manual_seed(0)
        calc = GeoffCalculator(build_model(name, ["Cu", "Zr"], 5.0, **MODELS[name]),
                               device=args.device, **calculator_options(args))
        for n in args.sizes:
            atoms = structure("cu", n)
            pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
            nl = median_ms(lambda: neighbour_list(pos, cell, pbc, 5.0))
            tnl = median_ms(lambda: torch_neighbour_list(
                torch.as_tensor(pos, device=args.device), cell, pbc, 5.0))
            graph = calc.graph(atoms)  # the calculator's own graph (list, pairs, checks)
            gr = median_ms(lambda: calc.graph(atoms))
            model = median_ms(lambda: calc.run_model(graph)["forces"].sum().item())
            call = median_ms(lambda: calc.calculate(atoms, ["energy", "forces"], ["positions"]))
            moved = translated(atoms)  # a new structure per call: the list is built afresh
            new = median_ms(lambda: calc.calculate(next(moved), ["energy", "forces"],
                                                   ["positions"]))
            if args.profile_md:
                parts = new_structure_parts(calc, moved, 5)
                print(f"\n{name}, {len(atoms)} atoms, new-structure call in parts (medians, "
                      "ms): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()) + "\n",
                      flush=True)
            steps = "".join(f" {t:.1f} | {t / model:.2f} |" for t in (
                md_step_ms(name, atoms, args, skin, args.profile_md and k == 0)
                for k, skin in enumerate(args.skins)))
            print(f"| {name} | {len(atoms)} | {nl:.1f} | {tnl:.1f} | {gr:.1f} | {model:.1f} | "
                  f"{call:.1f} | {call / model:.2f} | {new:.1f} | {new / model:.2f} |{steps}",
                  flush=True)
        mid = structure("cu", args.sizes[len(args.sizes) // 2])
        graph = calc.graph(mid)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            if cuda:  # a whole new-structure call: host work between kernels is the overhead
                calc.calculate(next(translated(mid)), ["energy", "forces"], ["positions"])
            else:
                calc.model(graph)["forces"].sum().item()
        what = "new-structure calculator call" if cuda else "model call"
        print(f"\n{name}, {len(mid)} atoms, {what}, top operators by self CPU time:\n```")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top,
                                        max_name_column_width=40))
        print("```\n")


if __name__ == "__main__":
    main()

"""Speed and memory of geoff's models (and optionally their peers) on FCC Cu and Cu64Zr36.

One command prints the whole table (markdown) and, with ``--out``, writes it:

    python benchmarks/speed.py                               # CPU: 32, 256, 864 atoms
    python benchmarks/speed.py --device cuda --grow          # GPU: 864 ... until out of memory
    python benchmarks/speed.py --peers                       # + mace-torch, schnetpack

Structures: FCC Cu (a = 3.61 Å, rattled 0.05 Å) and Cu64Zr36 (a simple-cubic lattice at
0.061 atoms/Å^3, 64:36 random species, rattled 0.3 Å: a dense random box, not a quenched
glass), periodic, cutoff 5 Å. Random weights, energy + forces (one forward, one backward).

Columns: ``model`` = the model called on a prepared graph (neighbour list built once, on the
model's device); ``calc`` = one ``GeoffCalculator`` call (graph from ``ase.Atoms``, neighbour
list, model, results back to numpy); both as medians, CUDA-synchronised. ``mem/atom``: GPU,
``torch.cuda.max_memory_allocated`` minus what was allocated before the call, over N; CPU,
growth of the process's peak RSS over the largest size, over N (an upper bound: it includes
the allocator's caches). ``exponent``: slope of log(time) against log(N) over the sizes
>= 256. ``--grow`` doubles the size after the last one until the model runs out of memory
(or ``--max-atoms``) or until ``--deadline`` seconds have passed.

Memory levers (``geoff/potentials/chunking.py``): ``--edge-chunks 0 131072 auto`` runs every
series once per value (0 = the plain path, C = edges in checkpointed chunks of about C,
``auto`` = what ``GeoffCalculator`` does by default, ``geoff/potentials/autochunk.py``: the
row's label shows the chunk it chose at that size; default ``auto``); ``--model-only`` skips
the calculator timing (the memory runs at 1M atoms need the time). ``benchmarks/memory_gpu.sh`` is the GPU memory run.
CPU memory is measured around the first model call only (peak RSS growth, fresh process).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# The hyper-parameters (64 channels for MACE, 128 for PaiNN and SchNet).
MODELS = {
    # 20 Gaussians: schnetpack's default, as its peer row uses (geoff's default is 32)
    "schnet": dict(n_features=128, n_layers=3, n_rbf=20),
    "painn": dict(n_features=128, n_layers=3),
    "nequip": dict(n_features=64, n_layers=3, l_max=2),
    "mace": dict(n_features=64, n_layers=2, l_max=3, hidden_l_max=1, correlation=3),
    # the second MACE measurement: 128 channels (not in the default --models)
    "mace128": dict(n_features=128, n_layers=2, l_max=3, hidden_l_max=1, correlation=3),
}
ARCHITECTURE = {"mace128": "mace"}  # the registry name where a row's name is not one
DEFAULT_MODELS = ["schnet", "painn", "nequip", "mace"]
CUTOFF = 5.0
TP_MODELS = ("nequip", "mace", "mace128")  # the models --kernels applies to (geoff/potentials/cueq.py)
SWITCH = {"auto": "auto", "on": True, "off": False}  # --edge-pairs / --radial-table -> calculator
TABLE_MODELS = ("schnet", "nequip", "mace", "mace128")  # the models --radial-table applies to (geoff/potentials/radial_table.py)


def structure(kind: str, n_atoms: int):
    """FCC Cu of about ``n_atoms`` (4 k^3) or a dense random Cu64Zr36 box of exactly it."""
    from ase import Atoms
    from ase.build import bulk

    if kind == "cu":
        k = max(1, round((n_atoms / 4) ** (1 / 3)))
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (k, k, k)
        atoms.rattle(0.05, seed=1)
        return atoms
    rng = np.random.default_rng(0)
    k = int(np.ceil(n_atoms ** (1 / 3)))
    spacing = 0.061 ** (-1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid[rng.permutation(len(grid))[:n_atoms]] * spacing
    symbols = np.where(rng.random(n_atoms) < 0.64, "Cu", "Zr")
    atoms = Atoms(symbols, positions=sites + rng.normal(0, 0.3, sites.shape),
                  cell=np.eye(3) * k * spacing, pbc=True)
    return atoms


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device, repeats: int, budget_s: float) -> float:
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < repeats and (time.perf_counter() - start < budget_s or len(times) < 2):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def first_call_memory(model_call, dev) -> dict:
    """Run ``model_call`` once: ``mem_bytes`` it needed (GPU: ``max_memory_allocated`` minus
    what was allocated before; CPU: peak RSS growth, KiB on Linux, so a fresh process per
    size) and, on the CPU, ``first_s`` (its time, s)."""
    import torch

    if dev.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        model_call()
        return {"mem_bytes": torch.cuda.max_memory_allocated(dev) - before}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model_call()
    first_s = time.perf_counter() - start
    return {"first_s": first_s,
            "mem_bytes": 1024 * (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)}


def time_geoff(name: str, kind: str, n_atoms: int, dtype: str, device: str, repeats: int,
               budget_s: float, edge_chunk=None, with_calc: bool = True,
               kernels: str = "e3nn", compile: bool = False, edge_pairs: str = "auto",
               radial_table: str = "auto") -> dict:
    """One row for one size: model and calculator medians (s) and memory (bytes);
    ``kernels``: the tensor-product kernels (``GeoffCalculator(kernels=...)``); ``compile``:
    ``GeoffCalculator(compile=True)`` (the first call, in the memory, compiles);
    ``edge_pairs``: "auto", "on" or "off" (``GeoffCalculator(edge_pairs=...)``);
    ``radial_table``: "auto", "on" or "off" (``GeoffCalculator(radial_table=...)``)."""
    import torch

    from geoff.calculators.ase import GeoffCalculator
    from geoff.potentials import build_model
    from geoff.potentials.chunking import set_edge_chunk

    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(ARCHITECTURE.get(name, name), species=["Cu", "Zr"], cutoff=CUTOFF,
                        **MODELS[name])
    # eager, as every row of speed.md so far (CUDA graphs, the calculator's default since
    # the fifteenth session, are timed by profile_calc.py: captured paths pay at the small
    # sizes, where these rows compare peers' eager calls)
    calc = GeoffCalculator(model, device=device, dtype=dtype, kernels=kernels, compile=compile,
                           edge_chunk="auto" if edge_chunk == "auto" else None,
                           edge_pairs=SWITCH[edge_pairs], radial_table=SWITCH[radial_table],
                           cuda_graphs=False)
    if edge_chunk not in (None, "auto"):
        set_edge_chunk(calc.model, edge_chunk)
    atoms = structure(kind, n_atoms)
    graph = calc.graph(atoms)  # what the calculator gives its model (edge pairs included)
    row = {"atoms": len(atoms), "edges": int(graph["edge_index"].shape[1])}
    if edge_chunk == "auto":  # the model timing runs at the chunk the calculator chooses
        start = time.perf_counter()
        row["chunk"] = calc.auto_chunk.chunk_for(graph)  # None on the CPU: the model's own
        row["choose_s"] = time.perf_counter() - start  # the first: with the calibration
        if row["chunk"] is not None:
            set_edge_chunk(calc.model, row["chunk"])

    def model_call():
        calc.run_model(graph)["forces"].sum().item()  # the model itself unless compiled

    def calc_call():
        calc.calculate(atoms, ["energy", "forces"], ["positions"])

    row.update(first_call_memory(model_call, dev))
    if repeats == 0 and "first_s" in row:  # CPU, slow sizes: the first call's time only
        row["model_s"] = row["first_s"]
    else:
        row["model_s"] = _median_time(model_call, dev, repeats, budget_s)
    row["calc_s"] = _median_time(calc_call, dev, repeats, budget_s) if with_calc else float("nan")
    return row


def run_series(args, name: str, kind: str, dtype: str, edge_chunk=None, kernels="e3nn",
               sizes=None, grow=None) -> list:
    """Every size for one (model, structure, dtype, edge chunk, kernels), each in a fresh
    subprocess (the memory is the size's own; an out-of-memory failure ends the series, not
    the run). ``kernels`` is also the table's label: "+compile" marks the --compile series,
    "+pairs" / "+edges" the --edge-pairs on / off series, "+table" / "+network" the
    --radial-table on / off ones (unmarked series: the calculator's "auto")."""
    parts = kernels.split("+")
    pairs = "on" if "pairs" in parts else "off" if "edges" in parts else "auto"
    spec = dict(name=name, kind=kind, dtype=dtype, device=args.device, repeats=args.repeats,
                budget=args.budget, threads=args.threads, edge_chunk=edge_chunk,
                calc=not args.model_only, kernels=parts[0], compile="compile" in parts,
                edge_pairs=pairs,
                radial_table="on" if "table" in parts else "off" if "network" in parts else "auto")

    def command(n):
        return [sys.executable, __file__, "--one", json.dumps(dict(spec, n=n))]

    return run_sizes(args, f"{name} {kind} {dtype} chunk={edge_chunk} {kernels}", command,
                     sizes=sizes, grow=grow)


def run_sizes(args, label: str, command, env=None, sizes=None, grow=None) -> list:
    """Rows for ``sizes`` (default ``args.sizes``), ``command(n)`` printing one JSON row per
    size as its last line; with ``grow`` (default ``args.grow``) the size doubles after the
    last one until a failure, ``args.max_atoms`` or the deadline. A failing size gives a
    ``failed`` row (out of memory, deadline, or the last line of its stderr) and ends it."""
    rows = []
    sizes = list(args.sizes if sizes is None else sizes)
    grow = args.grow if grow is None else grow
    k = 0
    while k < len(sizes):
        n = sizes[k]
        left = args.deadline_at - time.time()
        if left < 5:
            rows.append({"atoms": n, "failed": "deadline"})
            break
        try:
            proc = subprocess.run(command(n), capture_output=True, text=True, env=env,
                                  timeout=None if left == float("inf") else left)
        except subprocess.TimeoutExpired:
            rows.append({"atoms": n, "failed": "deadline"})
            break
        if proc.returncode != 0:
            rows.append({"atoms": n, "failed": _failure(proc.stderr, proc.returncode)})
            break
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {label} {rows[-1]}", file=sys.stderr, flush=True)
        if grow and k == len(sizes) - 1 and 2 * n <= args.max_atoms:
            sizes.append(2 * n)
        k += 1
    return rows


def _failure(stderr: str, returncode: int = 1) -> str:
    """Why a size failed, for its table cell: out of memory, a signal (a crash such as a
    segfault), or the last stderr line."""
    if "out of memory" in stderr.lower() or "OutOfMemory" in stderr:
        return "out of memory"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = (lines[-1] if lines else "no output")[:160].replace("|", "/")
    return f"killed by signal {-returncode}: {last}" if returncode < 0 else last


def one(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    row = time_geoff(spec["name"], spec["kind"], spec["n"], spec["dtype"], spec["device"],
                     spec["repeats"], spec["budget"], spec.get("edge_chunk"),
                     spec.get("calc", True), spec.get("kernels", "e3nn"),
                     spec.get("compile", False), spec.get("edge_pairs", "auto"),
                     spec.get("radial_table", "auto"))
    print(json.dumps(row))


def header(args) -> str:
    import torch

    dev = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor()
    load = os.getloadavg()
    return (f"machine: {platform.node()} ({dev or platform.machine()}), {os.cpu_count()} cores, "
            f"torch {torch.__version__}, threads {args.threads}, load average at start "
            f"{load[0]:.1f}\ncommand: python benchmarks/speed.py {' '.join(sys.argv[1:])}\n")


def plan(args) -> list:
    """(key, is_peer, run(sizes, grow) -> rows, sizes, may_grow) in the order to run them:
    per model family, structure and dtype, the peers' series first (the yardstick: a
    deadline then cuts geoff's extra variants, not the ratio), then geoff's."""
    from peers import PEERS, install, peer_command, peer_env, selected

    chosen = selected(args.peers) if args.peers is not None else []
    installed = {}
    items = []
    for name in args.models or sorted({p.family for p in chosen}):
        for kind in args.structures:
            for dtype in args.dtypes:
                short = dtype == "float64" and args.float64_sizes
                sizes = args.float64_sizes if short else args.sizes
                first = len(items)  # this family's series start here; its peers go first
                for chunk in args.edge_chunks if name in args.models else []:
                    for kernels in [k + c + p + t for k in (args.kernels if name in TP_MODELS
                                                        else ["e3nn"])
                                    for c in args.compile for p in args.edge_pairs
                                    for t in (args.radial_table if name in TABLE_MODELS
                                              else [""])]:
                        a = (name, kind, dtype, chunk, kernels)
                        items.append((a, False, lambda sz, g, a=a:
                                      run_series(args, *a, sizes=sz, grow=g), sizes, not short))
                for peer in (p for p in chosen if p.family == name):
                    key = (peer.label, name, kind, dtype)
                    if peer.not_run:
                        items.append((key, True, _failed(peer.not_run), sizes, False))
                        continue
                    if peer.gpu_only and args.device == "cpu":
                        items.append((key, True, _failed("GPU only"), sizes, False))
                        continue
                    if peer.folder not in installed:
                        installed[peer.folder] = install(peer.folder)
                    if installed[peer.folder]:
                        items.append((key, True, _failed(installed[peer.folder]), sizes, False))
                        continue
                    spec = dict(kind=kind, dtype=dtype, device=args.device, repeats=args.repeats,
                                budget=args.budget, threads=args.threads,
                                calc=not args.model_only)
                    items.append((key, True, lambda sz, g, c=peer_command(peer, spec),
                                  e=peer_env(peer.folder), k=key:
                                  run_sizes(args, " ".join(k), c, env=e, sizes=sz, grow=g),
                                  sizes, not short))
                items[first:] = sorted(items[first:], key=lambda item: not item[1])
    assert PEERS  # the registry the names were chosen from
    return items


def _failed(reason: str):
    return lambda sizes, grow: [{"atoms": sizes[0], "failed": reason}]


def run_all(args, report) -> tuple:
    """The first structure in the first dtype for every family (the headline), then, with
    ``--grow``, each of those grown from its last size, then the other structures and
    dtypes (not grown): what matters most is measured before the deadline cuts the rest.
    ``report(geoff, peers)`` is called after each series (partial tables)."""
    geoff, peers = {}, {}
    items = plan(args)
    first = (args.structures[0], args.dtypes[0])
    is_first = [(key[-2], key[-1]) == first if is_peer else key[1:3] == first
                for key, is_peer, *_ in items]
    order = [i for i in range(len(items)) if is_first[i]]
    rest = [i for i in range(len(items)) if not is_first[i]]
    for i in order:
        key, is_peer, run, sizes, _ = items[i]
        (peers if is_peer else geoff)[key] = run(sizes, False)
        report(geoff, peers)
    for i in order if args.grow else []:
        key, is_peer, run, sizes, may_grow = items[i]
        rows = (peers if is_peer else geoff)[key]
        if may_grow and rows and all("model_s" in r for r in rows) \
                and 2 * rows[-1]["atoms"] <= args.max_atoms:
            rows.extend(run([2 * rows[-1]["atoms"]], True))
            report(geoff, peers)
    for i in rest:
        key, is_peer, run, sizes, _ = items[i]
        (peers if is_peer else geoff)[key] = run(sizes, False)
        report(geoff, peers)
    return geoff, peers


def _chunk(text: str):
    return "auto" if text == "auto" else int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS, choices=list(MODELS))
    parser.add_argument("--structures", nargs="+", default=["cu", "cuzr"], choices=["cu", "cuzr"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", type=int, default=None,
                        help="default: 32 256 864 (cpu), 864 32000 131072 (cuda)")
    parser.add_argument("--float64-sizes", nargs="+", type=int, default=None,
                        help="sizes for float64 (default: --sizes); these series do not grow")
    parser.add_argument("--grow", action="store_true",
                        help="double after the last size (first structure and dtype only)")
    parser.add_argument("--max-atoms", type=int, default=1_100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls (median); 0 on the CPU: time the first call only")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per timing")
    parser.add_argument("--peers", nargs="*", default=None,
                        help="time the peers too (all, or those named: mace-torch cuEq nequip "
                             "compile schnetpack SchNet PaiNN ...), each in its own folder")
    parser.add_argument("--edge-chunks", nargs="+", type=_chunk, default=["auto"],
                        help="edges per checkpointed chunk, one series each (0: plain path; "
                             "auto: chosen from the free GPU memory, the calculator's default)")
    parser.add_argument("--kernels", nargs="+", default=["e3nn"], choices=["e3nn", "cueq"],
                        help="tensor-product kernels of the NequIP- and MACE-style models, one "
                             "series each (cueq: pip install geoff[cuda]; rows 'geoff mace+cueq')")
    parser.add_argument("--compile", action="store_const", const=["", "+compile"],
                        default=[""], help="each geoff series also through torch.compile "
                        "(GeoffCalculator(compile=True); rows 'geoff NAME+...+compile')")
    parser.add_argument("--compile-only", dest="compile", action="store_const",
                        const=["+compile"], help="the compiled series alone")
    parser.add_argument("--radial-table", nargs="+", default=["auto"],
                        choices=["auto", "on", "off"],
                        help="GeoffCalculator(radial_table=...) for the models with radial "
                             "tables (SchNet, NequIP-style, MACE-style), one series each "
                             "(rows '+table' / '+network' for on / off)")
    parser.add_argument("--edge-pairs", nargs="+", default=["auto"],
                        choices=["auto", "on", "off"], type=str,
                        help="GeoffCalculator(edge_pairs=...), one series each (auto: on the "
                             "CPU; rows '+pairs' / '+edges' for on / off)")
    parser.add_argument("--model-only", action="store_true", help="skip the calculator timing")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="seconds: start no size after it, stop a running one at it")
    parser.add_argument("--out", default=None, help="write the table (markdown) here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.edge_pairs = [{"auto": "", "on": "+pairs", "off": "+edges"}[p] for p in args.edge_pairs]
    args.radial_table = [{"auto": "", "on": "+table", "off": "+network"}[t]
                         for t in args.radial_table]
    if args.one:
        one(json.loads(args.one))
        return 0
    if args.sizes is None:
        args.sizes = [32, 256, 864] if args.device == "cpu" else [864, 32000, 131072]
    args.deadline_at = time.time() + args.deadline
    head = header(args)

    def render(geoff, peers, final=False) -> str:
        from peers.table import combined_table

        load = os.getloadavg()[0]
        tail = f"\nload average at the end: {load:.1f}\n" if final else "\n(partial)\n"
        return head + "\n" + combined_table(geoff, peers) + "\n" + tail

    def report(geoff, peers):
        if args.out:
            Path(args.out).write_text(render(geoff, peers))

    geoff, peers = run_all(args, report)
    text = render(geoff, peers, final=True)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

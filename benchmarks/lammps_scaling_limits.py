"""The largest fcc Cu system one device can run: `pair_style geoff` (one rank, graph periodic)
against the model alone (the same random-weight model called on a prepared graph), each found
by bisection on the number of atoms with a short run per try, in a fresh process each.

    python benchmarks/lammps_scaling_limits.py --model painn --device cuda --dtype float32 \
        --deadline $(( $(date +%s) + 200 )) --out limits.md

A try succeeds when the setup force call and two MD steps (LAMMPS) or one energy + forces +
stress call (model alone: what LAMMPS' setup step asks for, since thermo reads the pressure)
finish. Sizes: 4 nx m^2 atoms (box nx x m x m cells), so the bisection is not limited to
cubes; it doubles from --start until a try fails, then halves the gap until it is below
--resolution (relative). Tries stop at --deadline (time.time()), each kind getting an equal
share of the time; the report then gives the bracket it reached.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lammps_scaling import DECK  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="painn", help="registry name (random weights, cutoff 5 Å)")
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--start", type=int, default=32000, help="first size tried (atoms)")
    p.add_argument("--resolution", type=float, default=0.04,
                   help="stop when the largest failure / largest success - 1 is below this")
    p.add_argument("--deadline", type=float, default=float("inf"))
    p.add_argument("--which", nargs="+", default=["alone", "lammps"], choices=["alone", "lammps"])
    p.add_argument("--out", default=None, help="markdown report (default: print only)")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--chunk", type=int, default=None,
                   help="pair_style geoff chunk N for the LAMMPS tries (default: the pair "
                   "style's own, 131072 edges; 0 = off)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)    # internal: one try
    return p.parse_args(argv)


def box(atoms: int):
    """(nx, m): a box of nx x m x m fcc cells with about `atoms` atoms (4 nx m^2)."""
    m = max(1, round((atoms / 4) ** (1 / 3)))
    return max(1, round(atoms / (4 * m * m))), m


def build(name: str):
    import torch

    from geoff.potentials import build_model

    torch.manual_seed(0)    # the model lammps_scaling.py builds
    return build_model(name, species=["Cu"], cutoff=5.0)


def try_alone(spec: dict) -> dict:
    """The model alone on 4 nx m^2 atoms: one energy + forces + stress call."""
    import torch
    from ase.build import bulk

    from geoff.calculators.ase import GeoffCalculator
    from geoff.graph import atoms_to_graph

    nx, m = spec["nx"], spec["m"]
    calc = GeoffCalculator(build(spec["model"]), device=spec["device"], dtype=spec["dtype"])
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True) * (nx, m, m)
    atoms.rattle(0.05, seed=1)
    graph = atoms_to_graph(atoms, calc.model, dtype=calc.dtype, device=torch.device(spec["device"]))
    out = calc.model(graph, compute_forces=True, compute_stress=True)
    out["forces"].sum().item()
    peak = torch.cuda.max_memory_allocated() if spec["device"] == "cuda" else 0
    return {"atoms": len(atoms), "edges": int(graph["edge_index"].shape[1]), "peak_bytes": peak}


def try_lammps(spec: dict, path: str, workdir: Path, deadline: float) -> dict:
    """pair_style geoff on one rank (graph periodic): setup and two MD steps."""
    import lammps

    from geoff.lammps import lmp_environment

    nx, m = spec["nx"], spec["m"]
    deck = workdir / f"in.limit.{nx}.{m}"
    chunk = spec.get("chunk")
    deck.write_text(DECK.format(n=m, nx=nx, graph="auto", model=path, comm="", steps=2,
                                timing="" if chunk is None else f" chunk {chunk}"))
    cmd = [str(Path(lammps.__file__).parent / "lmp"), "-in", str(deck), "-log", "none"]
    out = subprocess.run(cmd, env=lmp_environment(), capture_output=True, text=True,
                         timeout=max(1.0, deadline - time.time()))
    text = out.stdout + out.stderr
    if out.returncode != 0 or "Loop time" not in out.stdout:
        lines = text.strip().splitlines()
        first = next((k for k, x in enumerate(lines) if "ERROR" in x), None)
        # The whole error (the pair style prints torch's message in full: the TorchScript
        # interpreter puts the cause after its traceback), and whether it is out of memory.
        why = " | ".join(lines[first:first + 40]) if first is not None else \
            (lines[-1] if lines else "?")
        oom = "out of memory" in text.lower()
        raise RuntimeError(("out of memory: " if oom else "") + why[:1500])
    loop = re.search(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", text)
    chunks = re.search(r"edge chunks \(chunk \d+\): ([0-9.eE+-]+) per chunked call", text)
    note = f"{float(loop.group(1)) / max(int(loop.group(2)), 1):.3g} s/step" if loop else ""
    note += f", {float(chunks.group(1)):.3g} chunks per call" if chunks else ", not chunked"
    return {"atoms": 4 * nx * m * m, "note": note}


def attempt(kind: str, atoms: int, args, path, workdir) -> tuple[bool, int, str]:
    """(fits, atoms actually tried, note) for one size, in a fresh process."""
    nx, m = box(atoms)
    spec = dict(model=args.model, device=args.device, dtype=args.dtype, nx=nx, m=m,
                chunk=args.chunk)
    tried = 4 * nx * m * m
    left = args.deadline - time.time()
    if left < 10:
        raise TimeoutError
    try:
        if kind == "lammps":
            return True, tried, try_lammps(spec, path, workdir, args.deadline)["note"]
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                              capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        raise TimeoutError from None
    except RuntimeError as e:
        return False, tried, str(e)[:1500]
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return False, tried, (lines[-1] if lines else "?")[:200]
    return True, tried, proc.stdout.strip().splitlines()[-1]


def largest(kind: str, args, path, workdir, log) -> dict:
    """Double from --start until a try fails, then bisect; {fits, fails, tries}."""
    fits, fails, tries = 0, None, []
    size = args.start
    try:
        while fails is None or fails / max(fits, 1) - 1 > args.resolution:
            ok, tried, note = attempt(kind, size, args, path, workdir)
            tries.append((tried, ok, note))
            log(f"{kind}: {tried} atoms {'fits' if ok else 'fails'} {note}")
            if not ok and "out of memory" not in note.lower():
                log(f"{kind}: stopped: the failure is not running out of memory")
                return {"fits": fits, "fails": None, "tries": tries}
            if ok:
                fits = max(fits, tried)
            else:
                fails = tried if fails is None else min(fails, tried)
                if fits == 0:
                    size = max(1, tried // 2)
                    continue
            size = 2 * fits if fails is None else (fits + fails) // 2
            if box(size) in (box(fits), box(fails or 0)):
                break    # no box between the two
    except TimeoutError:
        log(f"{kind}: deadline reached")
    return {"fits": fits, "fails": fails, "tries": tries}


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        print(json.dumps(try_alone(json.loads(args.one))))
        return 0
    import tempfile

    from geoff.export import export

    lines = []

    def log(text):
        print(text, flush=True)
        lines.append(text)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = export(build(args.model), workdir / "model.pt", dtype=args.dtype,
                      device=args.device)
        deadline = args.deadline
        for k, kind in enumerate(args.which):    # an equal share of the time left for each
            args.deadline = time.time() + (deadline - time.time()) / (len(args.which) - k)
            results[kind] = largest(kind, args, str(path), workdir, log)
        args.deadline = deadline
    rows = ["| path | largest that ran (atoms) | smallest that failed (atoms) |",
            "| --- | ---: | ---: |"]
    for kind, r in results.items():
        rows.append(f"| {'model alone' if kind == 'alone' else 'pair_style geoff'} | "
                    f"{r['fits']} | {r['fails'] if r['fails'] else '-'} |")
    ratio = ""
    if all(results.get(k, {}).get("fits") and results[k]["fails"] for k in ("alone", "lammps")):
        ratio = (f"\n\npair_style geoff / model alone: "
                 f"{results['lammps']['fits'] / results['alone']['fits']:.2f}")
    text = (f"# Largest system on one device: {args.model}, {args.dtype}, {args.device}\n\n"
            + "\n".join(rows) + ratio + "\n\nTries:\n\n" + "\n".join(f"- {x}" for x in lines)
            + "\n")
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

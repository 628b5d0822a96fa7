"""Replica-steps per second: R replicas batched in one graph against one replica at a time.

  python benchmarks/replicas_speed.py --device cpu --threads 1 --out results.json
  python benchmarks/replicas_speed.py --device cuda --replicas 1 8 32 128 --out gpu.json

Systems: 9-atom ethanol (``ase.build.molecule``, no cell) and a 200-atom Cu64Zr36 liquid-like
box (random positions at 15.5 Å^3/atom, no pair closer than 2.1 Å, cubic, periodic). Models:
untrained geoff models at their default size (speed does not depend on the weights).

For every system, model and R it times Langevin (BAOAB) steps:

* ``single``: the existing one-replica harness path (``GeoffCalculator`` + ``LangevinNVT``,
  what ``geoff md`` runs), steps/s = replica-steps/s of running replicas one at a time;
* ``batched``: ``BatchedForces`` + ``BatchedLangevin`` (what ``geoff md --replicas`` runs),
  integration only, as ``RunResult.steps_per_s`` counts it;
* ``batched+checks``: ``run_replicas`` end to end with every replica's failure checks (the
  default ``FailureCriteria``: non-finite values, force, temperature, the distance floor and,
  for the molecule, bonds) after every step (``--check-every 1``, default) or every N steps,
  no files written; replica-steps actually made per second (a replica that fails stops, and
  the number of failed replicas is printed).

``--cuda-graphs off|auto|on`` (default off, as the rows so far) goes to all three: the
calculator, ``BatchedForces`` and ``run_replicas`` (on CUDA, ``on`` and ``auto`` capture the
replicas' search with the model, ``geoff.md.replica_capture``).

Prints a Markdown table and writes the rows as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule


# the timer: wall clock (default), or this process's CPU time (--clock cpu: on a shared CPU
# machine with one torch thread, the work itself, not the other jobs' load)
CLOCK = [time.perf_counter]
GRAPHS = [False]  # --cuda-graphs


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.cell = np.zeros((3, 3))
    return atoms


def cuzr_box(n: int = 200, volume_per_atom: float = 15.5, seed: int = 0) -> Atoms:
    """Random dense Cu64Zr36 box (random sequential placement, min distance 2.1 Å)."""
    rng = np.random.default_rng(seed)
    length = (n * volume_per_atom) ** (1 / 3)
    pos = []
    while len(pos) < n:
        x = rng.uniform(0, length, 3)
        if pos:
            d = np.asarray(pos) - x
            d -= length * np.round(d / length)
            if np.min(np.linalg.norm(d, axis=1)) < 2.1:
                continue
        pos.append(x)
    n_cu = int(round(0.64 * n))
    symbols = ["Cu"] * n_cu + ["Zr"] * (n - n_cu)
    return Atoms(symbols, positions=pos, cell=[length] * 3, pbc=True)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_single(model, atoms, device, dtype, steps):
    from geoff.calculators import GeoffCalculator
    from geoff.md.integrators import make_integrator
    from geoff.md.recording import initial_velocities

    a = atoms.copy()
    initial_velocities(a, 300.0, 0)
    a.calc = GeoffCalculator(model, device=device, dtype=dtype, cuda_graphs=GRAPHS[0])
    dyn = make_integrator(a, "langevin", 0.5, 300.0, 100.0, seed=0)
    for _ in range(2):
        dyn.step()
    _sync(device)
    t0 = CLOCK[0]()
    for _ in range(steps):
        dyn.step()
        a.get_potential_energy()
    return steps / (CLOCK[0]() - t0)


def time_batched(model, atoms, device, dtype, replicas, steps):
    from geoff.md.recording import initial_velocities
    from geoff.md.replica_forces import BatchedForces
    from geoff.md.replica_integrators import make_batched_integrator

    starts = []
    for r in range(replicas):
        a = atoms.copy()
        initial_velocities(a, 300.0, r)
        starts.append(a)
    forces = BatchedForces(model, atoms, device, dtype, cuda_graphs=GRAPHS[0])
    integ = make_batched_integrator(
        "langevin", [a.positions for a in starts], [a.get_momenta() for a in starts],
        atoms.get_masses(), forces, 0.5, [300.0] * replicas, 100.0, list(range(replicas)),
        3 * len(atoms))
    active = np.arange(replicas)
    for _ in range(2):
        integ.step(active)
    t0 = CLOCK[0]()
    for _ in range(steps):
        integ.step(active)
    return replicas * steps / (CLOCK[0]() - t0), forces.on_device


def time_end_to_end(model, atoms, device, dtype, replicas, steps, check_every=1):
    """(replica-steps made per second, failed replicas) of ``run_replicas`` with checks."""
    from geoff.md import FailureCriteria, MDSettings
    from geoff.md.replicas import run_replicas

    s = MDSettings(ensemble="langevin", timestep_fs=0.5, steps=steps, tau_fs=100.0,
                   device=device, dtype=dtype, log_every=10, traj_every=10 ** 9,
                   failure=FailureCriteria(check_every=check_every))
    run_replicas(model, atoms, MDSettings(**{**s.to_dict(), "steps": 2}), replicas=replicas,
                 cuda_graphs=GRAPHS[0])
    _sync(device)
    t0 = CLOCK[0]()
    results = run_replicas(model, atoms, s, replicas=replicas, cuda_graphs=GRAPHS[0])
    wall = CLOCK[0]() - t0
    return sum(r.steps_done for r in results) / wall, sum(r.failed for r in results)


def main(argv=None):
    from geoff.potentials import build_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--models", nargs="+", default=["schnet", "mace"])
    p.add_argument("--systems", nargs="+", default=["ethanol", "cuzr200"])
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: time with this process's CPU time (one thread on a shared CPU)")
    p.add_argument("--no-checks", action="store_true", help="skip the end-to-end column")
    p.add_argument("--check-every", type=int, default=1,
                   help="end-to-end column: the failure checks every this many steps")
    p.add_argument("--out", default=None, help="JSON of the rows")
    p.add_argument("--cuda-graphs", choices=["off", "auto", "on"], default="off",
                   help="cuda_graphs of the calculator, BatchedForces and run_replicas")
    args = p.parse_args(argv)
    GRAPHS[0] = {"off": False, "auto": "auto", "on": True}[args.cuda_graphs]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    systems = {"ethanol": (ethanol(), ["C", "H", "O"]), "cuzr200": (cuzr_box(), ["Cu", "Zr"])}
    rows = []
    where = torch.cuda.get_device_name() if "cuda" in args.device else \
        (platform.processor() or platform.machine())
    head = (f"device {args.device} ({where}), {args.clock} clock, "
            f"{args.dtype}, cuda_graphs {args.cuda_graphs}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, "
            f"load average before {os.getloadavg()[0]:.2f}")
    print(head)
    print("| system | model | R | single steps/s | batched replica-steps/s | speed-up | "
          f"batched+checks (every {args.check_every}) replica-steps/s | failed replicas | "
          "edges on device |")
    print("|---|---|---|---|---|---|---|---|---|")
    for sys_name in args.systems:
        atoms, species = systems[sys_name]
        for name in args.models:
            torch.manual_seed(0)
            model = build_model(name, species=species, cutoff=5.0)
            single = time_single(model, atoms, args.device, args.dtype, args.steps)
            for r in args.replicas:
                steps = max(2, args.steps if r <= 32 else args.steps // 2)
                batched, on_device = time_batched(model, atoms, args.device, args.dtype, r,
                                                  steps)
                e2e, n_failed = (float("nan"), 0) if args.no_checks else time_end_to_end(
                    model, atoms, args.device, args.dtype, r, steps, args.check_every)
                row = {"system": sys_name, "n_atoms": len(atoms), "model": name,
                       "replicas": r, "single_steps_per_s": single,
                       "batched_replica_steps_per_s": batched, "speedup": batched / single,
                       "end_to_end_replica_steps_per_s": e2e, "check_every": args.check_every,
                       "failed_replicas": n_failed, "edges_on_device": on_device,
                       "device": args.device, "dtype": args.dtype}
                rows.append(row)
                print(f"| {sys_name} ({len(atoms)}) | {name} | {r} | {single:.1f} | "
                      f"{batched:.1f} | {batched / single:.1f}x | {e2e:.1f} | {n_failed} | "
                      f"{on_device} |",
                      flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"header": head, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()

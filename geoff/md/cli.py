"""Run one molecular-dynamics trajectory with a geoff model (or a reference potential).

  geoff md model.ckpt structure.extxyz --ensemble bussi -T 600 --dt 1 --steps 5000 --out run1
  geoff md both.ckpt cu.xyz --forces mts --mts-steps 4 --ensemble nve -T 300 --out mts
  geoff md emt cu.xyz -T 900 --steps 2000            # a reference potential: emt, eam, xtb

Writes ``<out>/trajectory.extxyz`` (flushed every frame), ``<out>/thermo.csv`` and
``<out>/metrics.json`` (energy drift and fluctuation, temperature, speed, and the failure step
and reason if the run failed: a NaN, a force above --max-force, T above --max-temperature-factor
x the target, atoms closer than --min-distance, or a broken/formed bond in a molecule).
Exit status 0 when the run completed, 3 when it failed (its trajectory is kept).

Batched replicas (one graph, one device; ``geoff.md.replicas``):

  geoff md model.ckpt ethanol.xyz --ensemble langevin -T 500 --replicas 128 --device cuda
  geoff md model.ckpt ethanol.xyz --ensemble bussi --temperatures 300 500 700 900

run seeds seed..seed+R-1 (or one replica per temperature), each writing what a single run
writes under ``<out>/replica_<r>/`` (with its metrics.json), plus ``<out>/replicas.json`` (every
replica's status, failure step and reason, and the batch's replica-steps/s). Exit status 3
when any replica failed.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="geoff checkpoint, or a reference potential name "
                                 "(emt, eam, xtb)")
    p.add_argument("structure", help="structure file (any ASE format; first frame unless "
                                     "--index)")
    p.add_argument("--index", default="0", help="frame of the structure file (default 0; "
                                               "-1 for the last)")
    p.add_argument("--ensemble", default="nve",
                   help="nve | langevin | bussi (csvr) | nose-hoover (default nve)")
    p.add_argument("-T", "--temperature", type=float, default=300.0,
                   help="target temperature in K (NVT) and of the Maxwell-Boltzmann start")
    p.add_argument("--init-temperature", type=float, default=None,
                   help="start temperature in K (default: --temperature)")
    p.add_argument("--keep-velocities", action="store_true",
                   help="start from the velocities stored in the structure file")
    p.add_argument("--dt", type=float, default=1.0, help="time step in fs (default 1)")
    p.add_argument("--steps", type=int, default=1000, help="number of steps (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="velocities and thermostat noise")
    p.add_argument("--tau", type=float, default=100.0,
                   help="thermostat time constant in fs (Langevin 1/friction, Bussi tau, "
                        "Nose-Hoover damping; default 100)")
    p.add_argument("--forces", default="conservative",
                   choices=["conservative", "direct", "mts"],
                   help="conservative (-dE/dx), direct (the model's force head) or mts "
                        "(multiple time stepping, needs a force_head='both' model)")
    p.add_argument("--mts-steps", type=int, default=4,
                   help="inner steps per conservative correction for --forces mts")
    p.add_argument("--engine", default="ase", choices=["ase", "lammps"])
    p.add_argument("--replicas", type=int, default=None,
                   help="advance R replicas (seeds seed..seed+R-1) as one batched graph")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="one replica per temperature (K), batched like --replicas")
    p.add_argument("-o", "--out", "--output", dest="out", default="md-output",
                   help="output folder (default md-output)")
    p.add_argument("--log-every", type=int, default=10, help="thermo every N steps")
    p.add_argument("--traj-every", type=int, default=10, help="trajectory frame every N steps")
    p.add_argument("--format", default="extxyz", choices=["extxyz", "traj"],
                   help="trajectory format")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                   help="model precision (default float64; float32 is the fast choice on a "
                        "GPU, where its energies are still summed in float64)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 is usually fastest for small cells)")
    s = p.add_argument_group(
        "speed (the calculator's knobs; left out: its defaults, see GeoffCalculator)")
    s.add_argument("--kernels", choices=["e3nn", "cueq"], default=None,
                   help="tensor-product kernels of NequIP- and MACE-style models: cueq "
                        "(cuEquivariance, pip install geoff[cuda]; CUDA) or e3nn")
    s.add_argument("--compile", action="store_true",
                   help="torch.compile the model (pays in runs of more than a few hundred "
                        "steps: the compile takes tens of seconds)")
    s.add_argument("--cuda-graphs", choices=["off", "auto", "on"], default=None,
                   help="captured CUDA graphs from the second step on (auto, the default: "
                        "the neighbour search and the model in one replay per step up to "
                        "3,000 atoms, SchNet 10,000, the search alone up to 50,000; on: "
                        "both up to 10,000 atoms and the model at any size; off: eager); "
                        "with --replicas the same choices capture the replicas' search "
                        "and model together (auto: up to 3,000 atoms in all)")
    s.add_argument("--skin", default=None,
                   help="Verlet-list skin in Å, or auto (0.5 on CUDA, 0 on the CPU)")
    s.add_argument("--skin-edges", choices=["auto", "filter", "keep"], default=None,
                   help="keep: hand the model the whole Verlet list and keep the graph on "
                        "the device between steps (exact; pays for small systems on a GPU); "
                        "auto (default): keep on CUDA up to 1,500 atoms, 3,000 for SchNet")
    g = p.add_argument_group("failure detection")
    g.add_argument("--max-force", type=float, default=50.0, help="eV/Å (default 50)")
    g.add_argument("--max-temperature-factor", type=float, default=5.0,
                   help="fail above this x the target temperature (default 5)")
    g.add_argument("--min-distance", type=float, default=None,
                   help="Å (default: half the shortest starting distance, at most 1 Å "
                        "below, at least 0.5 Å; 0 turns the distance checks off)")
    g.add_argument("--check-bonds", action="store_true",
                   help="check bonds also for periodic structures (always on for molecules)")


def calculator_options(args) -> dict:
    """The GeoffCalculator keywords that the command line sets (only those given)."""
    options = {}
    if args.kernels is not None:
        options["kernels"] = args.kernels
    if args.compile:
        options["compile"] = True
    if args.cuda_graphs is not None:
        options["cuda_graphs"] = {"off": False, "auto": "auto", "on": True}[args.cuda_graphs]
    if args.skin is not None:
        try:
            options["skin"] = args.skin if args.skin == "auto" else float(args.skin)
        except ValueError:
            raise ValueError(f"--skin takes a distance in Å or auto, got {args.skin!r}") from None
    if args.skin_edges is not None:
        options["skin_edges"] = args.skin_edges
    return options


def _potential(name: str):
    from .references import available_references
    from .settings import Reference

    if not Path(name).exists() and name.lower() in available_references():
        return Reference(name.lower())
    if not Path(name).exists():
        raise FileNotFoundError(f"no checkpoint at {name} (and it is not a reference "
                                f"potential: {available_references()})")
    return name


def run(args) -> int:
    import ase.io
    import torch

    from .failure import FailureCriteria
    from .runners import MDSettings, get_runner
    from .study_io import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    potential = _potential(args.model)
    if not Path(args.structure).exists():
        raise FileNotFoundError(f"no structure file {args.structure}")
    index = int(args.index) if args.index.lstrip("-").isdigit() else args.index
    atoms = ase.io.read(args.structure, index=index)
    if isinstance(potential, str):  # a geoff checkpoint: check the structure before writing
        from ..checkpoint import load  # anything (elements, NaN, overlapping atoms)
        from ..graph import atoms_to_graph

        potential = load(potential)  # loaded once: the run takes the model itself
        atoms_to_graph(atoms, potential, min_distance=args.min_distance)
    criteria = FailureCriteria(max_force=args.max_force,
                               temperature_factor=args.max_temperature_factor,
                               min_distance=args.min_distance,
                               check_bonds=True if args.check_bonds else None)
    settings = MDSettings(
        ensemble=args.ensemble, temperature_K=args.temperature,
        init_temperature_K=args.init_temperature,
        velocities="keep" if args.keep_velocities else "maxwell-boltzmann",
        timestep_fs=args.dt, steps=args.steps, seed=args.seed, tau_fs=args.tau,
        forces=args.forces, mts_steps=args.mts_steps, log_every=args.log_every,
        traj_every=args.traj_every, trajectory_format=args.format, dtype=args.dtype,
        device=args.device, failure=criteria, calculator=calculator_options(args))
    out = Path(args.out)
    if args.replicas or args.temperatures:
        return _run_replicas(args, potential, atoms, settings, out)
    runner = get_runner(args.engine)
    reason = runner.unavailable(potential, settings)
    if reason:
        raise ValueError(f"the {args.engine} engine cannot run this: {reason}")
    print(f"geoff md: {len(atoms)} atoms, {settings.ensemble}, {settings.forces} forces, "
          f"T = {settings.temperature_K:g} K, dt = {settings.timestep_fs:g} fs, "
          f"{settings.steps} steps -> {out}/")
    result = runner.run(potential, atoms, settings, out)
    summary = _summary(result, settings, args.engine)
    write_json(out / "metrics.json", summary)
    print(f"  {result.steps_done} steps ({result.time_ps:.3g} ps) at "
          f"{result.steps_per_s:.1f} steps/s; drift {summary['drift_meV_atom_ps']:.3g} "
          f"meV/atom/ps, T = {summary['T_mean']:.0f} ± {summary['T_std']:.0f} K")
    print(f"  trajectory: {result.trajectory}")
    if result.failure is not None:
        print(f"  FAILED at step {result.failure.step} ({result.failure.reason}): "
              f"{result.failure.message}")
        return 3
    return 0


def _summary(result, settings, engine: str) -> dict:
    """The metrics.json of one run (or one replica)."""
    from . import metrics as M

    th = result.thermo
    n = result.n_atoms
    summary = {"status": "failed" if result.failed else "ok", "steps_done": result.steps_done,
               "simulated_ps": result.time_ps, "steps_per_s": result.steps_per_s,
               "drift_meV_atom_ps": M.energy_drift(th["time_ps"], th["conserved"], n),
               "fluct_meV_atom": M.energy_fluctuation(th["time_ps"], th["conserved"], n),
               **M.temperature_stats(th["temperature"], settings.temperature_K
                                     if settings.ensemble != "nve" else None),
               "settings": settings.to_dict(), "engine": engine,
               "trajectory": result.trajectory}
    if result.failure is not None:
        summary.update(failure_step=result.failure.step, failure_reason=result.failure.reason,
                       message=result.failure.message)
    return summary


def _run_replicas(args, potential, atoms, settings, out: Path) -> int:
    from .replicas import replica_steps_per_s, run_replicas
    from .settings import MDSettings
    from .study_io import write_json

    if args.engine != "ase":
        raise ValueError("--replicas runs in geoff's batched engine, not LAMMPS; drop "
                         "--engine lammps")
    results = run_replicas(potential, atoms, settings, out, replicas=args.replicas,
                           temperatures=args.temperatures)
    rows = []
    for r, res in enumerate(results):
        s = MDSettings.from_dict(res.settings)
        summary = _summary(res, s, "replicas")
        write_json(Path(res.thermo_path).parent / "metrics.json", summary)
        rows.append({"replica": r, "seed": s.seed, "temperature_K": s.temperature_K,
                     "status": summary["status"], "steps_done": res.steps_done,
                     "failure_step": summary.get("failure_step"),
                     "failure_reason": summary.get("failure_reason")})
    speed = replica_steps_per_s(results)
    write_json(out / "replicas.json", {"replicas": rows, "replica_steps_per_s": speed})
    failed = [row for row in rows if row["status"] == "failed"]
    print(f"  {len(results)} replicas, {speed:.1f} replica-steps/s; {len(failed)} failed")
    for row in failed:
        print(f"  replica {row['replica']} (seed {row['seed']}) FAILED at step "
              f"{row['failure_step']} ({row['failure_reason']})")
    return 3 if failed else 0

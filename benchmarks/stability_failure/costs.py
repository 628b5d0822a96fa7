"""What one training step and one batched MD step cost, per model, head and system, on this
machine: the numbers the GPU calls' budgets are set from (``run.py`` reads ``costs.json``).

  python benchmarks/stability_failure/costs.py --data-dir benchmarks/stability_failure/data \
      --out benchmarks/stability_failure/costs.json [--systems ethanol] [--models schnet]

* training step (s): ``Trainer._train_step`` (forward, forces, loss, backward, AdamW, EMA) on
  batches of the study's batch size from the system's data (float32, the study's train
  flags), the median of ``--train-steps`` steps after two warm-up steps;
* MD step (s): one step of the study's batched replicas (``BatchedForces`` and the batched
  Bussi, or multiple time stepping for "both" heads), ``--replicas`` replicas of the start
  structure (float32), the median over ``--md-steps`` steps after two warm-up steps; no
  checks, no files (the checks' cost is ``benchmarks/replicas_speed.py``'s).

One torch thread (the GPU calls run one core per process); times are CPU (process) seconds,
so the other jobs on a shared machine do not inflate them.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jobs import flag_dict  # noqa: E402
from run import checkpoints, data_file, load, start_file  # noqa: E402


def _median_time(fn, steps: int) -> float:
    """Median CPU seconds of ``fn()`` (process time: the cost, not the shared machine's
    load; one torch thread, so CPU time is the step's time on an idle core)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times))


def train_step_s(data: Path, model: str, head: str, train_flags: dict, hparams: dict,
                 steps: int) -> float:
    """Median seconds of one optimizer step (see the module docstring)."""
    from geoff.training import config as cfg_mod
    from geoff.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        options = {**train_flags, "data": str(data), "model": model, "force_head": head,
                   "hparams": hparams,
                   "device": "cpu", "num_threads": 1, "progress": False,
                   "out": str(Path(tmp) / "run"), "overwrite": True}
        cfg = cfg_mod.make_config(None, **options)
        trainer = Trainer(cfg)
        batches = iter(trainer.loader.batches(0, 0))

        def step():
            nonlocal batches
            try:
                batch, counts = next(batches)
            except StopIteration:
                batches = iter(trainer.loader.batches(1, 0))
                batch, counts = next(batches)
            trainer._train_step(batch, counts)

        return _median_time(step, steps)


def md_step_s(start: Path, species, model: str, head: str, forces: str, cutoff: float,
              hparams: dict, replicas: int, steps: int) -> float:
    """Median seconds of one batched MD step of ``replicas`` replicas (untrained model)."""
    import ase.io

    from geoff.md.integrators import degrees_of_freedom
    from geoff.md.recording import initial_velocities
    from geoff.md.replica_forces import BatchedForces
    from geoff.md.replica_integrators import make_batched_integrator
    from geoff.potentials import build_model

    atoms = ase.io.read(start)
    torch.manual_seed(0)
    net = build_model(model, species=species, cutoff=cutoff, force_head=head, **hparams)
    starts = []
    for r in range(replicas):
        a = atoms.copy()
        initial_velocities(a, 300.0, r)
        starts.append(a)
    fn = BatchedForces(net, atoms, "cpu", "float32", "direct" if forces == "direct" else
                       "conservative")
    integ = make_batched_integrator(
        "bussi", [a.positions for a in starts], [a.get_momenta() for a in starts],
        atoms.get_masses(), fn, 0.5, [300.0] * replicas, 100.0, list(range(replicas)),
        degrees_of_freedom(atoms, "bussi"), forces, 4)
    active = np.arange(replicas)
    return _median_time(lambda: integ.step(active), steps)


def hparams_dict(pairs) -> dict:
    """``["n_features=32"]`` -> ``{"n_features": 32}`` (values read as YAML)."""
    import yaml

    return {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in pairs or [])}


def gpu_costs(call_dir: Path) -> dict:
    """{system: {label: {"train_step_s", ...}}} of an earlier GPU call's training runs, from
    the ``summary.json`` in its ``train-<system>.tgz`` files: the mean seconds of one
    training step on the GPU (``train_time_s / steps``), under that call's load (its
    ``processes_at_once`` training processes sharing the two GPUs through MPS)."""
    import tarfile

    out: dict = {}
    for tgz in sorted(Path(call_dir).glob("train-*.tgz")):
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) != 4 or parts[-1] != "summary.json":
                    continue
                s = json.loads(tar.extractfile(member).read())
                label = parts[2].rsplit("-", 1)[0]  # <model>-<head>-<budget>
                if not s.get("steps") or parts[2].endswith("-short"):
                    continue  # the long runs: minutes of steady state, not a start-up
                out.setdefault(parts[1], {})[label] = {
                    "train_step_s": s["train_time_s"] / s["steps"], "steps": s["steps"],
                    "epochs": s["epochs"], "stopped_by": s.get("stopped_by"),
                    "device": s.get("device"), "source": tgz.name}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(HERE / "study.yaml"))
    p.add_argument("--data-dir", default=str(HERE / "data"))
    p.add_argument("--out", default=str(HERE / "costs.json"))
    p.add_argument("--systems", nargs="+", default=None)
    p.add_argument("--models", nargs="+", default=None, help="checkpoint labels or models")
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--md-steps", type=int, default=5)
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--gpu-from", default=None,
                   help="a GPU call's folder of train-<system>.tgz: record its measured "
                        "training steps as costs.json's 'gpu' section, and measure nothing")
    p.add_argument("--processes", type=int, default=20,
                   help="--gpu-from: training processes that call ran at once")
    args = p.parse_args(argv)
    if args.gpu_from:
        out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        out["gpu"] = {**gpu_costs(Path(args.gpu_from)),
                      "processes_at_once": args.processes, "gpus": 2}
        Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(json.dumps(out["gpu"], indent=1))
        return 0
    torch.set_num_threads(1)
    cfg = load(Path(args.config), pilot=False)
    flags = flag_dict(cfg["train"]["flags"])
    data_dir = Path(args.data_dir)
    out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    out.setdefault("machine", {})["threads"] = 1
    out["machine"]["torch"] = torch.__version__
    for system in cfg["systems"]:
        if args.systems and system["name"] not in args.systems:
            continue
        import ase.io

        data = data_file(data_dir, system["name"])
        frames = ase.io.read(data, index=":40")
        species = sorted({s for a in frames for s in a.get_chemical_symbols()},
                         key=lambda s: ase.data.atomic_numbers[s])
        with tempfile.TemporaryDirectory() as tmp:
            small = Path(tmp) / "small.extxyz"
            ase.io.write(small, frames)
            for label, model, head, forces in checkpoints(cfg):
                if args.models and label not in args.models and model not in args.models:
                    continue
                hp = hparams_dict((cfg["train"].get("hparams") or {}).get(model))
                t_train = train_step_s(small, model, head, flags, hp, args.train_steps)
                t_md = md_step_s(start_file(data_dir, system["name"]), species, model, head,
                                 forces, float(flags.get("cutoff", 5.0)), hp, args.replicas,
                                 args.md_steps)
                row = {"train_step_s": t_train, "md_step_s": t_md, "replicas": args.replicas,
                       "n_atoms": len(frames[0]), "batch_size": flags.get("batch_size")}
                out.setdefault(system["name"], {})[label] = row
                print(f"{system['name']:12s} {label:20s} train step {t_train * 1e3:8.1f} ms  "
                      f"MD step (R={args.replicas}) {t_md * 1e3:8.1f} ms", flush=True)
                Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    import ase.data  # noqa: F401  (atomic numbers for the species order)

    sys.exit(main())

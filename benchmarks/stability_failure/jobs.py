"""The failure study's GPU work as job lines: one shell command per process, one core each,
spread over the GPUs (``CUDA_VISIBLE_DEVICES`` round robin), each stopped by a deadline.

Budgets. Every checkpoint of a system and budget trains the same number of epochs (same
split, schedule and hyper-parameters; only the budget differs). A budget is ``{epochs: N}``
(or N per system), or ``{seconds: S}`` (or S per system): the epochs the slowest checkpoint of the system trains in S seconds of
one GPU process, from the CPU cost of its training step (``costs.json``, ``costs.py``) and an
assumed GPU speed-up over one CPU thread (``train.gpu_speedup``, per system, stated in the
README):

    epochs = clip(S x speedup / (max over checkpoints of train_step_s x steps_per_epoch),
                  1, max_epochs)

Where an earlier GPU call measured the training steps (``costs.json``'s ``gpu`` section,
from call 1's ``summary.json`` files: ``costs.py --gpu-from``), the GPU step is used directly,
times ``train.gpu_contention`` (the call's other processes share the cores):

    epochs = clip(S / (max over checkpoints of gpu_train_step_s x contention x steps_per_epoch),
                  1, max_epochs)

``--max-time`` (``max_seconds``, or S x ``max_time_factor``) stops a run whose speed-up was
overestimated; it still writes its checkpoint and test metrics (``summary.json``'s
``stopped_by`` says so, and the report shows the epochs). A budget given as a flag list
(``[--epochs, "6"]``) is used as it is (the CPU pilot).

MD. One ``geoff stability --only <checkpoint>`` process per system, budget and checkpoint, its
seeds batched as replicas; ``GEOFF_REPLICA_WALL_S`` (``md.nvt_share`` of the process's time)
bounds the NVT run and ``GEOFF_REPLICA_DEADLINE`` the NVE leg after it, so a run stopped by
the clock is censored (kept, with the steps it made), not lost.
"""
from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional


def steps_per_epoch(n_frames: int, flags: dict) -> int:
    n_train = n_frames - round(n_frames * flags["val_fraction"]) \
        - round(n_frames * flags["test_fraction"])
    return max(1, math.ceil(n_train / flags["batch_size"]))


def budget_flags(cfg: dict, system: str, labels: List[str], budget, n_frames: int,
                 costs: Optional[dict]) -> List[str]:
    """The ``geoff train`` flags of one budget of ``system`` (see the module docstring)."""
    if isinstance(budget, list):
        return [str(x) for x in budget]
    t = cfg["train"]
    seconds = budget.get("seconds")
    if isinstance(seconds, dict):
        seconds = seconds[system]
    epochs = budget.get("epochs")
    if isinstance(epochs, dict):
        epochs = epochs[system]
    if epochs is None:
        epochs = budget_epochs(cfg, system, labels, seconds, n_frames, costs)
    limit = budget.get("max_seconds") or seconds * t.get("max_time_factor", 1.25)
    return ["--epochs", str(int(epochs)), "--max-time", f"{limit / 60.0:.3f}"]


def budget_epochs(cfg: dict, system: str, labels: List[str], seconds: float, n_frames: int,
                  costs: Optional[dict]) -> int:
    """The epochs the slowest checkpoint of ``labels`` trains in ``seconds`` on the GPU (the
    slowest of those ``costs.json`` has: costs.py may have measured only the likely slowest
    ones of an expensive system)."""
    t = cfg["train"]
    gpu = gpu_train_step_s(cfg, system, labels, costs)
    if gpu is not None:
        per_epoch = gpu * float(t.get("gpu_contention", 1.0)) * \
            steps_per_epoch(n_frames, flag_dict(t["flags"]))
        return int(min(max(math.floor(seconds / per_epoch), 1), t.get("max_epochs", 10 ** 6)))
    mine = (costs or {}).get(system) or {}
    measured = [label for label in labels if label in mine]
    if not measured:
        raise ValueError(f"no training cost for {system} in costs.json: run "
                         f"benchmarks/stability_failure/costs.py --systems {system} first")
    slowest = max(mine[label]["train_step_s"] for label in measured)
    speedup = float(t["gpu_speedup"][system])
    epochs = seconds * speedup / (slowest * steps_per_epoch(n_frames, flag_dict(t["flags"])))
    return int(min(max(math.floor(epochs), 1), t.get("max_epochs", 10 ** 6)))


def gpu_train_step_s(cfg: dict, system: str, labels: List[str],
                     costs: Optional[dict]) -> Optional[float]:
    """The slowest GPU training step (s) of ``labels`` measured in an earlier GPU call
    (``costs.json``'s ``gpu`` section, ``costs.py --gpu-from``) for ``system``, or for the
    system ``train.gpu_costs_from`` names in its place (aspirin's from ethanol's: both are
    launch-bound on the GPU at a batch of 8 molecules); None without such a measurement."""
    source = (cfg["train"].get("gpu_costs_from") or {}).get(system, system)
    mine = ((costs or {}).get("gpu") or {}).get(source) or {}
    measured = [mine[label]["train_step_s"] for label in labels if label in mine]
    return max(measured) if measured else None


def flag_dict(flags: List[str]) -> Dict[str, object]:
    """``[--batch-size, "8", --no-progress]`` -> ``{"batch_size": 8, "progress": False}``."""
    import yaml

    flags, out = list(flags), {}
    while flags:
        key = flags.pop(0).lstrip("-").replace("-", "_")
        if flags and not str(flags[0]).startswith("--"):
            out[key] = yaml.safe_load(str(flags.pop(0)))
        elif key.startswith("no_"):
            out[key[3:]] = False
        else:
            out[key] = True
    return out


def _line(env: dict, args: List[str], log: Path, timeout_s: Optional[float]) -> str:
    prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
    stop = f"timeout -k 10 {int(timeout_s)} " if timeout_s else ""
    cmd = " ".join(shlex.quote(str(a)) for a in args)
    return f"{prefix} {stop}{cmd} > {shlex.quote(str(log))} 2>&1".strip()


def train_jobs(cfg: dict, out: Path, data_dir: Path, checkpoints, gpus: int,
               costs: Optional[dict], python: str = sys.executable,
               missing_only: bool = False) -> List[str]:
    """One ``geoff train`` line per system, checkpoint and budget, long budgets first (they
    take the cores while the short ones cycle through the rest). A run with test metrics is
    skipped; with ``missing_only`` also one with a checkpoint (an earlier call's run that the
    clock stopped before its test: ``test_mae.py`` measures it instead of retraining)."""
    t = cfg["train"]
    jobs = []
    for budget_name, budget in sorted(t["budgets"].items(),
                                      key=lambda kv: -_seconds(kv[1])):
        for system in cfg["systems"]:
            data = data_dir / f"{system['name']}.extxyz.gz"
            n_frames = count_frames(data) if not isinstance(budget, list) else 0
            for label, model, head, _ in checkpoints:
                run = out / "train" / system["name"] / f"{label}-{budget_name}"
                if (run / "test_metrics.json").exists() or \
                        (missing_only and (run / "best.ckpt").exists()):
                    continue
                hp = (t.get("hparams") or {}).get(model)
                args = [python, "-m", "geoff.cli", "train", "--data", data, "--model", model,
                        "--force-head", head, "--device", cfg["device"], *t["flags"],
                        *budget_flags(cfg, system["name"], [c[0] for c in checkpoints],
                                      budget, n_frames, costs),
                        *(["--hparams", *hp] if hp else []), "--out", run, "--overwrite"]
                env = {"CUDA_VISIBLE_DEVICES": len(jobs) % gpus} if gpus else {}
                env["OMP_NUM_THREADS"] = 1
                run.mkdir(parents=True, exist_ok=True)
                jobs.append(_line(env, args, run / "job.log", None))
    return jobs


def count_frames(data: Path) -> int:
    """Frames of a data file: its provenance JSON's ``n_frames`` (``geoff data``), else read."""
    provenance = Path(str(data).replace(".extxyz.gz", ".provenance.json"))
    if provenance.exists():
        return int(json.loads(provenance.read_text())["n_frames"])
    import ase.io

    return sum(1 for _ in ase.io.iread(data))


def _seconds(budget) -> float:
    """A budget's seconds (the largest, when given per system): long budgets go first."""
    if not isinstance(budget, dict):
        return 0.0
    seconds = budget.get("seconds") or 0.0
    return float(max(seconds.values()) if isinstance(seconds, dict) else seconds)


def md_jobs(cfg: dict, studies: List[tuple], gpus: int, seconds: float,
            python: str = sys.executable) -> List[str]:
    """One ``geoff stability --only`` line per (config path, folder, model name) of
    ``studies``; each process gets ``seconds`` of wall time from now (see the docstring)."""
    import time

    deadline = time.time() + seconds
    share = float(cfg.get("md_share_nvt", 0.7))
    jobs = []
    for config, folder, name in studies:
        env = {"CUDA_VISIBLE_DEVICES": len(jobs) % gpus} if gpus else {}
        env.update(OMP_NUM_THREADS=1, GEOFF_REPLICA_DEADLINE=f"{deadline:.0f}",
                   GEOFF_REPLICA_WALL_S=f"{share * seconds:.0f}")
        args = [python, "-m", "geoff.cli", "stability", config, "--out", folder, "--only",
                name, "--resume", "--no-progress", "--threads", "1"]
        log = Path(folder) / "logs" / f"{name.replace(':', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        # the hard stop only catches what the deadline cannot (a process stuck outside MD)
        jobs.append(_line(env, args, log, seconds + 60))
    return jobs


def md_jobs_until(cfg: dict, studies: List[tuple], gpus: int, deadline: float,
                  nice: int = 0, python: str = sys.executable,
                  wait_for: Optional[Dict[str, Path]] = None,
                  wait_until: Optional[float] = None) -> List[str]:
    """Like ``md_jobs``, for processes that may start later than now (after their model's
    training): every process stops by the Unix time ``deadline``; the NVE leg keeps
    1 - ``md_share_nvt`` of the time left when the process starts (computed by the shell
    line: ``GEOFF_REPLICA_RESERVE_S``, counted back from the deadline, so a slow start-up
    eats into the NVT run, not the NVE leg), the NVT run the rest. ``nice``: the processes' CPU priority (0 first; the call's cores are
    shared by more processes than there are). ``wait_for``: model name -> a file (the
    training run's ``summary.json``) that the line waits for, polling, until the Unix time
    ``wait_until`` at the latest (a training stopped by the clock writes none)."""
    share = int(round(100 * float(cfg.get("md_share_nvt", 0.7))))
    left = f"$(( {int(deadline)} - $(date +%s) ))"
    reserve = f"GEOFF_REPLICA_RESERVE_S=$(( {left} * {100 - share} / 100 ))"
    jobs = []
    for config, folder, name in studies:
        env = {"CUDA_VISIBLE_DEVICES": len(jobs) % gpus} if gpus else {}
        env.update(OMP_NUM_THREADS=1, GEOFF_REPLICA_DEADLINE=int(deadline))
        prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
        args = [python, "-m", "geoff.cli", "stability", config, "--out", folder, "--only",
                name, "--resume", "--no-progress", "--threads", "1"]
        log = Path(folder) / "logs" / f"{name.replace(':', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = " ".join(shlex.quote(str(a)) for a in args)
        wait = ""
        if wait_for and name in wait_for:
            wait = (f"until [ -f {shlex.quote(str(wait_for[name]))} ] || "
                    f"[ $(date +%s) -ge {int(wait_until or deadline)} ]; do sleep 2; done; ")
        jobs.append(f"{wait}[ {left} -gt 10 ] && {prefix} {reserve} "
                    f"timeout -k 10 $(( {left} + 15 )) nice -n {int(nice)} {cmd} "
                    f"> {shlex.quote(str(log))} 2>&1")
    return jobs


def read_costs(path: Path) -> Optional[dict]:
    return json.loads(Path(path).read_text()) if Path(path).exists() else None

"""Faults during training: a real ``geoff train`` process killed with SIGKILL at random moments
(some of them inside checkpoint writes), then continued with ``geoff train --resume``.

Each kill must leave a last.ckpt that loads (weights_only) with its trainer state, the resumed
process must start from exactly that checkpoint, at most one checkpoint interval of steps may
be lost, and the run that finally completes must end with the same weights, metrics and test
numbers as a run never interrupted (so nothing corrupt or stale was ever loaded).

The fast test kills twice (~20 s on 2 idle cores); the slow one 24 times (``make test-slow``; its numbers are in
benchmarks/results/reliability.md, "Faults during training").
"""
import csv
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import List, Optional

import pytest
import torch

from geoff import checkpoint
from geoff.data.io import write_dataset
from geoff.training import make_config, make_split
from geoff.training.run_folder import ATOMIC, RESULTS, RunFolder
from test_training import emt_frames

CHECKPOINT_EVERY = 3
# 16 training structures in batches of 2: 8 steps per epoch; 30 epochs = 240 steps.
OPTIONS = ["--model", "schnet", "--hparams", "n_features=16", "n_layers=2", "n_rbf=8",
           "--cutoff", "3.5", "--batch-size", "2", "--val-fraction", "0.1",
           "--test-fraction", "0.1", "--warmup-steps", "0", "--lr", "5e-3",
           "--scheduler", "cosine", "--ema-decay", "0.9", "--checkpoint-every",
           str(CHECKPOINT_EVERY), "--no-progress", "--num-threads", "1", "--seed", "0"]

# `geoff train` (geoff.cli.main) with one callback added that prints "step N" after every
# optimizer step, once the step's periodic checkpoint, if any, is written: the test reads how
# far the process got when it was killed.
_REPORTING_TRAIN = """
import sys
import geoff.training.trainer as trainer_module

class ReportingTrainer(trainer_module.Trainer):
    def __init__(self, config, callbacks=()):
        report = lambda t: print(f"step {t.step}", flush=True)
        super().__init__(config, [*callbacks, report])

trainer_module.Trainer = ReportingTrainer
from geoff.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


@dataclass
class Kill:
    """One SIGKILL and what it left behind."""

    moment: str  # "startup" (random time after launch), "step" (random step), "write" (inside
    # a checkpoint write over an earlier checkpoint; "startup" and "step" kills may hit writes too)
    start_step: int  # where this process started (0 or the resumed checkpoint's step)
    reached: int  # the last step the process reported before it died (start_step if none)
    mid_write: List[str]  # files whose write the kill interrupted (temporaries left over)
    checkpoint_step: Optional[int]  # step of last.ckpt after the kill (None: no checkpoint yet)
    corrupt: bool  # last.ckpt or best.ckpt could not be read back

    @property
    def steps_lost(self) -> int:
        saved = self.checkpoint_step or 0
        return max(self.reached - saved, 0)


class Life:
    """One ``geoff train`` process, its output lines read by a thread as they come."""

    def __init__(self, script, args, out):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, str(script), *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out, self.lines, self.reached = out, [], None
        self.stale = set(_temporaries(out))  # left by the previous kill, until cleaned up
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def poll_lines(self) -> bool:
        """Take the lines printed so far; False once the output has ended."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return True
            if line is None:
                return False
            self.lines.append(line)
            if line.startswith("step "):
                self.reached = int(line.split()[1])

    def new_temporaries(self) -> List[str]:
        """Temporary files of writes this process started and has not finished."""
        return [name for name in _temporaries(self.out) if name not in self.stale]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        while self.poll_lines():
            time.sleep(0.001)

    def finish(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        while self.poll_lines():
            time.sleep(0.001)
        return rc


def _temporaries(out) -> List[str]:
    return sorted(p.name for p in out.glob(".*.tmp"))


def _checkpoint_state(out):
    """(step of last.ckpt or None, corrupt?) read as `--resume` and users would read them."""
    corrupt, step = False, None
    if (out / "last.ckpt").exists():
        try:
            step = int(checkpoint.read(out / "last.ckpt")["extra"]["trainer"]["step"])
        except Exception:  # noqa: BLE001 - any failure to read back is a corrupt checkpoint
            corrupt = True
    if (out / "best.ckpt").exists():
        try:
            checkpoint.load(out / "best.ckpt")
        except Exception:  # noqa: BLE001
            corrupt = True
    return step, corrupt


def _wait_and_kill(life: Life, moment: str, rng: random.Random, start_step: int,
                   timeout: float = 120.0) -> bool:
    """Kill ``life`` at a moment of the kind asked for; False if it finished first."""
    t0 = time.time()
    deadline = t0 + rng.uniform(0.0, 4.0)  # "startup": from launch (imports, data, resume, ...)
    target = start_step + rng.randint(1, 3 * CHECKPOINT_EVERY)
    while time.time() - t0 < timeout:
        if not life.poll_lines() or life.proc.poll() is not None:
            return False
        if moment == "startup" and time.time() >= deadline:
            break
        if moment == "step" and life.reached is not None and life.reached >= target:
            time.sleep(rng.uniform(0.0, 0.02))  # somewhere inside the next step(s)
            break
        if moment == "write" and (life.out / "last.ckpt").exists() \
                and any(".ckpt." in name for name in life.new_temporaries()):
            break  # a checkpoint is being written over an earlier one
        if moment != "write":
            time.sleep(0.001)
    else:
        raise AssertionError(f"no {moment} moment within {timeout} s:\n" + "\n".join(life.lines))
    life.kill()
    return True


def _check_resumed_from(life: Life, start_step: int) -> None:
    """A resumed process says where it resumed: exactly the checkpoint the test read."""
    resumed = [line for line in life.lines if line.startswith("resumed ")]
    if resumed:  # (a kill at start-up may come before the line)
        assert resumed[0].endswith(f"step {start_step}"), (resumed, start_step)


def kill_and_resume(data, out, n_kills: int, epochs: int, seed: int, script):
    """Train into ``out``, killing the process ``n_kills`` times and resuming it after each
    kill; returns the kills and the completed run's output lines."""
    rng = random.Random(seed)
    fresh = ["--data", str(data), "--out", str(out), "--epochs", str(epochs), *OPTIONS]
    kills: List[Kill] = []
    args, start_step = fresh, 0
    moments = ["write", "step", "startup"]
    while True:
        life = Life(script, args, out)
        if len(kills) == n_kills:
            rc = life.finish(timeout=300)
            assert rc == 0, "\n".join(life.lines[-30:])
            _check_resumed_from(life, start_step)
            return kills, life.lines
        moment = moments[len(kills)] if len(kills) < 3 else rng.choice(moments)
        if not _wait_and_kill(life, moment, rng, start_step):
            raise AssertionError("the run ended before the last kill; train longer:\n"
                                 + "\n".join(life.lines[-30:]))
        _check_resumed_from(life, start_step)
        reached = life.reached if life.reached is not None else start_step
        mid_write = [".".join(name.split(".")[1:3]) for name in life.new_temporaries()]
        step, corrupt = _checkpoint_state(out)
        kills.append(Kill(moment, start_step, reached, mid_write, step, corrupt))
        assert not corrupt, f"kill {len(kills)} ({moment}) left an unreadable checkpoint"
        if step is None:  # killed before the first checkpoint: start again
            args, start_step = fresh, 0
        else:
            args, start_step = ["--resume", "--out", str(out)], step


def _rows(path):
    with open(path) as fh:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(fh)]


def check_fault_run(tmp_path, n_kills: int, epochs: int, seed: int):
    data = tmp_path / "cu.extxyz"
    write_dataset(emt_frames(20), data)
    script = tmp_path / "reporting_train.py"
    script.write_text(_REPORTING_TRAIN)
    out = tmp_path / "killed"
    t0 = time.time()
    kills, lines = kill_and_resume(data, out, n_kills, epochs, seed, script)
    seconds = time.time() - t0
    # The uninterrupted reference: the same options, in this process (cheaper than another
    # start-up; float32 training gives the same bits here as in a fresh process).
    from geoff.cli import main

    assert main(["train", "--data", str(data), "--out", str(tmp_path / "reference"),
                 "--epochs", str(epochs), *OPTIONS]) == 0

    assert len(kills) == n_kills
    assert not any(k.corrupt for k in kills), kills
    assert max(k.steps_lost for k in kills) <= CHECKPOINT_EVERY, kills
    assert _temporaries(out) == [], "a killed write's temporary file was left behind"
    # The run that completed is the uninterrupted run: weights (raw and EMA), the optimizer's
    # step count, every metrics row and the test numbers.
    done, ref = (checkpoint.read(p / "last.ckpt") for p in (out, tmp_path / "reference"))
    for key, value in ref["state_dict"].items():
        assert torch.equal(done["state_dict"][key], value), key
    for key, value in ref["extra"]["trainer"]["model"].items():
        assert torch.equal(done["extra"]["trainer"]["model"][key], value), key
    assert done["extra"]["trainer"]["step"] == ref["extra"]["trainer"]["step"]
    assert _rows(out / "metrics.csv") == _rows(tmp_path / "reference" / "metrics.csv")
    test_done, test_ref = (json.loads((p / "test_metrics.json").read_text())
                           for p in (out, tmp_path / "reference"))
    assert {k: v for k, v in test_done.items() if k != "checkpoint"} == \
        {k: v for k, v in test_ref.items() if k != "checkpoint"}
    summary = {
        "kills": len(kills),
        "by_moment": {m: sum(k.moment == m for k in kills) for m in ("startup", "step", "write")},
        "killed_mid_write": sum(bool(k.mid_write) for k in kills),
        "mid_write_files": sorted({f for k in kills for f in k.mid_write}),
        "resumes": sum(k.checkpoint_step is not None for k in kills),
        "fresh_restarts": sum(k.checkpoint_step is None for k in kills),
        "max_steps_lost": max(k.steps_lost for k in kills),
        "steps_lost": [k.steps_lost for k in kills],
        "corrupt_loads": sum(k.corrupt for k in kills),
        "final_equals_uninterrupted": True,
        "seconds": round(seconds, 1),
    }
    print("\nfaults during training:", json.dumps(summary))
    return kills, summary


def test_kill_during_training_resumes_exactly(tmp_path):
    """Two kills: inside a checkpoint write, then at a random step."""
    kills, summary = check_fault_run(tmp_path, n_kills=2, epochs=4, seed=0)
    assert [k.moment for k in kills] == ["write", "step"]


@pytest.mark.slow
def test_kill_during_training_many_times(tmp_path):
    """24 kills at random moments; at least a few inside checkpoint writes."""
    kills, summary = check_fault_run(tmp_path, n_kills=24, epochs=30, seed=1)
    assert summary["killed_mid_write"] >= 3, summary


def test_run_folder_drops_temporaries_of_killed_writes(tmp_path):
    """A restart removes the temporary file of any write a kill interrupted (a checkpoint,
    metrics.csv, config.yaml, ...), and nothing else; --overwrite clears every result."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ATOMIC:
        (out / f".{name}.k1ll3d.tmp").write_text("half a file")
    (out / ".notes.txt.abcdef.tmp").write_text("not the run's")
    for name in RESULTS:
        (out / name).write_text("an earlier run")
    folder = RunFolder(out)
    with pytest.raises(ValueError, match="--resume"):
        folder.claim(overwrite=False)
    folder.claim(overwrite=True)
    cfg = make_config({"data": "cu.extxyz", "out": str(out)})
    folder.open(cfg, make_split(10, 0.2, 0.2, seed=0), {k: "cu.extxyz" for k in ("train", "val", "test")})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".notes.txt.abcdef.tmp", "config.yaml", "split_test.txt", "split_train.txt",
         "split_val.txt"])

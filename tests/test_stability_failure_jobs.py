"""The failure study's GPU job lines (benchmarks/stability_failure/jobs.py): budgets from step
costs, GPUs round robin, deadlines in the environment of every MD process."""
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "benchmarks" / "stability_failure"
sys.path.insert(0, str(HERE))

import jobs  # noqa: E402
from run import checkpoints, load  # noqa: E402


def test_flag_dict():
    assert jobs.flag_dict(["--batch-size", "8", "--no-progress", "--cutoff", "5.0",
                           "--deterministic"]) == {"batch_size": 8, "progress": False,
                                                   "cutoff": 5.0, "deterministic": True}


def test_long_budget_is_set_by_the_slowest_checkpoint():
    cfg = load(HERE / "study.yaml", pilot=False)
    costs = {"ethanol": {"schnet-conservative": {"train_step_s": 0.01},
                         "nequip-conservative": {"train_step_s": 0.1}}}
    labels = [c[0] for c in checkpoints(cfg)]
    # 500 frames, 10 % val and test, batch 8: 50 steps per epoch; 330 s x 3 / (0.1 s x 50)
    flags = jobs.budget_flags(cfg, "ethanol", labels, {"seconds": 330}, 500, costs)
    assert flags[:2] == ["--epochs", "198"]
    assert float(flags[3]) == pytest.approx(330 * cfg["train"]["max_time_factor"] / 60, 1e-3)
    assert jobs.budget_flags(cfg, "ethanol", labels, {"epochs": 3, "max_seconds": 120}, 500,
                             costs) == ["--epochs", "3", "--max-time", "2.000"]
    with pytest.raises(ValueError, match="costs.py --systems cuzr-liquid"):
        jobs.budget_flags(cfg, "cuzr-liquid", labels, {"seconds": 330}, 500, costs)


def test_train_jobs_spread_over_gpus(tmp_path):
    cfg = load(HERE / "study.yaml", pilot=True)
    lines = jobs.train_jobs(cfg, tmp_path, HERE / "data", checkpoints(cfg), 2, None,
                            python="python3")
    assert len(lines) == 3 * 2  # three heads, two budgets
    assert [line.split()[0] for line in lines[:3]] == ["CUDA_VISIBLE_DEVICES=0",
                                                        "CUDA_VISIBLE_DEVICES=1",
                                                        "CUDA_VISIBLE_DEVICES=0"]
    assert all("--force-head" in line and "job.log" in line for line in lines)


def test_md_jobs_carry_the_deadlines(tmp_path):
    import time

    cfg = {"md_share_nvt": 0.5}
    line, = jobs.md_jobs(cfg, [("c.yaml", tmp_path, "m-long")], 2, 100.0, python="python3")
    env = dict(kv.split("=") for kv in line.split() if kv.startswith("GEOFF_"))
    assert float(env["GEOFF_REPLICA_WALL_S"]) == 50
    assert abs(float(env["GEOFF_REPLICA_DEADLINE"]) - (time.time() + 100)) < 5
    assert "--only m-long" in line and "timeout -k 10 160" in line

"""Call 3 of the failure study (benchmarks/stability_failure): budgets from measured GPU
steps, MD processes that start late, the plan, the headline tables, test errors of
checkpoints left untested."""
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parents[1] / "benchmarks" / "stability_failure"
sys.path.insert(0, str(HERE))

import jobs  # noqa: E402
from costs import gpu_costs  # noqa: E402
from headline import head_stats, headline_markdown  # noqa: E402
from report import headline  # noqa: E402
from run import call3_plan, checkpoints, load  # noqa: E402


def test_aspirin_budget_from_ethanols_gpu_step():
    cfg = load(HERE / "study.yaml", pilot=False)
    labels = [c[0] for c in checkpoints(cfg)]
    costs = {"gpu": {"ethanol": {"dimenet-conservative": {"train_step_s": 0.1},
                                 "schnet-conservative": {"train_step_s": 0.02}}}}
    cfg["train"]["gpu_contention"] = 2.0
    # 500 frames -> 50 steps per epoch; 125 s / (0.1 s x 2 x 50) = 12.5 -> 12 epochs
    flags = jobs.budget_flags(cfg, "aspirin", labels, {"seconds": {"aspirin": 125}}, 500,
                              costs)
    assert flags[:2] == ["--epochs", "12"]
    assert float(flags[3]) == pytest.approx(125 * cfg["train"]["max_time_factor"] / 60, 1e-3)
    # no GPU measurement for CuZr's stand-in: the CPU costs are needed, and named
    with pytest.raises(ValueError, match="costs.py --systems cuzr-liquid"):
        jobs.budget_flags(cfg, "cuzr-liquid", labels, {"seconds": 330}, 500, costs)


def test_missing_only_skips_runs_with_a_checkpoint(tmp_path):
    cfg = load(HERE / "study.yaml", pilot=True)
    run = tmp_path / "train" / "ethanol" / "schnet-conservative-long"
    run.mkdir(parents=True)
    (run / "best.ckpt").write_text("x")  # trained, but no test metrics
    args = (cfg, tmp_path, HERE / "data", checkpoints(cfg), 0, None)
    assert len(jobs.train_jobs(*args, python="python3")) == 6
    lines = jobs.train_jobs(*args, python="python3", missing_only=True)
    assert len(lines) == 5 and not any(str(run) + " " in line for line in lines)


def test_md_jobs_until_compute_their_share_when_they_start(tmp_path):
    """A late process gets the NVT share of the time left when it starts; one that starts
    after the deadline does not run."""
    fake = tmp_path / "python"  # prints the environment it runs in
    fake.write_text("#!/bin/sh\nenv\n")
    fake.chmod(0o755)
    deadline = time.time() + 40
    line, = jobs.md_jobs_until({"md_share_nvt": 0.5}, [("c.yaml", tmp_path, "m-long")], 2,
                               deadline, nice=5, python=str(fake))
    assert "nice -n 5" in line and "CUDA_VISIBLE_DEVICES=0" in line
    assert subprocess.run(["sh", "-c", line], cwd=tmp_path).returncode == 0
    env = dict(kv.split("=", 1) for kv in
               (tmp_path / "logs" / "m-long.log").read_text().splitlines() if "=" in kv)
    assert 15 <= int(env["GEOFF_REPLICA_RESERVE_S"]) <= 20  # the NVE leg's half
    assert "GEOFF_REPLICA_WALL_S" not in env
    assert int(env["GEOFF_REPLICA_DEADLINE"]) == int(deadline)
    # a model still training: its line waits for the run's summary.json, or the time limit
    summary = tmp_path / "summary.json"
    line, = jobs.md_jobs_until({}, [("c.yaml", tmp_path, "w")], 0, deadline, python=str(fake),
                               wait_for={"w": summary}, wait_until=time.time() + 30)
    proc = subprocess.Popen(["sh", "-c", line], cwd=tmp_path)
    time.sleep(1.0)
    assert proc.poll() is None and not (tmp_path / "logs" / "w.log").exists()
    summary.write_text("{}")
    assert proc.wait(timeout=10) == 0 and (tmp_path / "logs" / "w.log").exists()
    line, = jobs.md_jobs_until({}, [("c.yaml", tmp_path, "v")], 0, deadline, python=str(fake),
                               wait_for={"v": tmp_path / "never.json"},
                               wait_until=time.time() - 1)
    assert subprocess.run(["sh", "-c", line], cwd=tmp_path, timeout=10).returncode == 0
    late, = jobs.md_jobs_until({}, [("c.yaml", tmp_path, "late")], 0, time.time() - 5,
                               python=str(fake))
    assert subprocess.run(["sh", "-c", late], cwd=tmp_path).returncode != 0
    assert (tmp_path / "logs" / "late.log").exists() is False


def test_call3_plan_and_pilot_systems():
    plan = dict(line.split("=", 1) for line in
                call3_plan(load(HERE / "study.yaml", pilot=False)).splitlines())
    assert plan["PLAN_SYSTEMS"] == "'ethanol cuzr-liquid aspirin'"
    assert int(plan["PLAN_TRAIN_UNTIL_S"]) < int(plan["PLAN_DEADLINE_S"]) <= 540
    assert "aspirin-long:0" in plan["PLAN_STAGE_B"] and "aspirin" not in plan["PLAN_STAGE_A"]
    assert plan["PLAN_STAGE_C"] == "cuzr-liquid-short:10"  # after the training
    # the pilot's aspirin runs only when named
    assert [s["name"] for s in load(HERE / "study.yaml", True)["systems"]] == ["ethanol"]
    pilot = load(HERE / "study.yaml", True, ["ethanol", "aspirin"])
    assert [s["name"] for s in pilot["systems"]] == ["ethanol", "aspirin"]
    plan = call3_plan(pilot)
    assert "aspirin-short:5" in plan and "cuzr" not in plan and "PLAN_STAGE_C=''" in plan


def test_gpu_costs_read_the_long_runs_of_a_call(tmp_path):
    summary = {"steps": 400, "train_time_s": 40.0, "epochs": 8, "stopped_by": "max_time"}
    for label in ("mace-both-long", "mace-both-short"):
        d = tmp_path / "train" / "ethanol" / label
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(summary))
    with tarfile.open(tmp_path / "train-ethanol.tgz", "w:gz") as tar:
        tar.add(tmp_path / "train", arcname="train")
    got = gpu_costs(tmp_path)
    assert list(got["ethanol"]) == ["mace-both"]  # the short run's start-up is not a cost
    assert got["ethanol"]["mace-both"]["train_step_s"] == pytest.approx(0.1)


def _rows():
    """Two seeds per head: conservative survives 10 ps, direct fails at 1 ps, both one of
    two at 4 ps; NVE drifts 0.1 / 50 / 1."""
    rows = []
    for head, ttf, failed, drift, mae in (("conservative", [10, 10], [0, 0], 0.1, 30),
                                          ("direct", [1, 1], [1, 1], 50, 60),
                                          ("both", [4, 10], [1, 0], 1.0, 40)):
        for seed in range(2):
            base = {"system": "eth", "budget": "long", "model": "schnet", "head": head,
                    "status": "failed" if failed[seed] else "ok", "seed": seed,
                    "force_mae_meV_A": mae, "failure_reason": "bond" if failed[seed] else "",
                    "stopped": not failed[seed]}
            rows.append({**base, "ensemble": "nvt", "failed": bool(failed[seed]),
                         "ttf_ps": ttf[seed], "length_ps": ttf[seed],
                         "drift_meV_atom_ps": float("nan")})
            rows.append({**base, "ensemble": "nve", "failed": False, "ttf_ps": 2.0,
                         "length_ps": 2.0, "status": "ok", "drift_meV_atom_ps": -drift})
    return rows


def test_head_stats_count_failures_per_simulated_ns():
    rows = _rows()
    s = head_stats(rows, "eth", "long", "both", {"schnet"})
    assert (s["runs"], s["failed"], s["simulated_ps"]) == (2, 1, 14)
    assert s["per_ns"] == pytest.approx(1000 / 14) and s["drift"] == pytest.approx(1.0)
    assert s["censored"] and s["median_ttf"] == 7
    d = head_stats(rows, "eth", "long", "direct", {"schnet"})
    assert d["per_ns"] == pytest.approx(1000.0) and not d["censored"]
    md = "\n".join(headline_markdown(rows, headline(rows)))
    assert "| eth | long | direct | 2 / 2 | 1e+03 | 1 | 2 | 50 |" in md
    assert "schnet ≥ 10 (0/2, 30)" in md


def test_test_mae_matches_a_direct_evaluation(tmp_path):
    """test_mae.py writes the force MAE of best.ckpt on the split's test frames."""
    import ase.io
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    from conftest import small_model
    from geoff.checkpoint import save

    frames = []
    rng = np.random.default_rng(0)
    for k in range(4):
        a = molecule("CH3CH2OH")
        a.rattle(0.05, seed=k)
        a.calc = SinglePointCalculator(a, energy=0.0, forces=rng.normal(size=(9, 3)))
        frames.append(a)
    ase.io.write(tmp_path / "eth.extxyz.gz", frames)
    run = tmp_path / "train" / "eth" / "m-long"
    run.mkdir(parents=True)
    model = small_model("schnet", species=("C", "H", "O"), cutoff=4.0, force_head="both")
    save(model, run / "best.ckpt")
    (run / "split_test.txt").write_text("# geoff split 'test'\n1\n3\n")
    training = run.parent / "still-training"  # skipped: its trainer will test it
    training.mkdir()
    save(model, training / "best.ckpt")
    (tmp_path / "skip.txt").write_text("eth/still-training\n")
    subprocess.run([sys.executable, str(HERE / "test_mae.py"), str(tmp_path / "train"),
                    "--data-dir", str(tmp_path), "--skip", str(tmp_path / "skip.txt")],
                   check=True, capture_output=True)
    assert not (training / "test_metrics.json").exists()
    got = json.loads((run / "test_metrics.json").read_text())
    from geoff.calculators import GeoffCalculator

    calc = GeoffCalculator(model, dtype="float64")
    res = []
    for k in (1, 3):  # the frames as written (extxyz rounds them)
        ref = ase.io.read(tmp_path / "eth.extxyz.gz", index=k)
        a = ref.copy()
        a.calc = calc
        res.append(a.get_forces() - ref.get_forces())
    assert got["forces_mae_meV_A"] == pytest.approx(1000 * np.abs(res).mean(), rel=1e-9)
    assert "direct_forces_mae_meV_A" in got and got["n_structures"] == 2


def test_rdf_times_in_parallel_equal_serial(tmp_path):
    """The report reads the liquid's trajectories over worker processes: same times."""
    import ase.io
    from ase.build import bulk

    from report import _rdf_times

    tasks = []
    for seed in range(3):
        folder = tmp_path / f"s{seed}"
        row = {"model": "m", "system": "cu", "ensemble": "nvt", "dt_fs": 1.0, "seed": seed}
        run = folder / "runs" / "m" / "cu" / "nvt" / "dt1fs" / f"seed{seed}"
        run.mkdir(parents=True)
        frames = []
        for k in range(6):
            a = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
            a.rattle(0.05 + 0.2 * k * seed, seed=k)  # seed 0 stays a crystal
            a.info["time_ps"] = 0.5 * k
            frames.append(a)
        ase.io.write(run / "trajectory.extxyz", frames)
        tasks.append((folder, row, {"threshold": 0.2, "window_ps": 1.0, "r_max": 3.6,
                                    "n_bins": 36}, None))
    from geoff.md.metrics import rdf

    _, g_ref = rdf(frames[:1], 3.6, 36)
    tasks = [t[:3] + (g_ref,) for t in tasks]
    serial = _rdf_times(tasks, 1)
    assert np.array_equal(np.asarray(serial), np.asarray(_rdf_times(tasks, 2)), equal_nan=True)
    assert np.isfinite(serial).any()


def test_plot_skips_checkpoints_without_a_test_mae(tmp_path):
    """A system whose checkpoints all lack a test MAE (training stopped before its test)
    must not break the report's plot."""
    from report import _plot

    rows = _rows()
    head = headline(rows)
    for h in head:
        h["force_mae_meV_A"] = float("nan")
    other = [{**h, "system": "asp", "force_mae_meV_A": 50.0} for h in headline(rows)]
    _plot(head + other, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0

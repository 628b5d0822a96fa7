"""``GEOFF_REPLICA_RESERVE_S``: a batched run followed by other ensembles stops that much
before ``GEOFF_REPLICA_DEADLINE``, so the last ensemble (the NVE leg) keeps its time."""
from types import SimpleNamespace

from geoff.md.study_replicas import _not_last, deadline_from_env


def test_reserve_is_kept_only_for_runs_followed_by_others(monkeypatch):
    monkeypatch.setenv("GEOFF_REPLICA_DEADLINE", "1000")
    monkeypatch.delenv("GEOFF_REPLICA_WALL_S", raising=False)
    monkeypatch.setenv("GEOFF_REPLICA_RESERVE_S", "150")
    assert deadline_from_env(now=0.0) == 1000.0
    assert deadline_from_env(now=0.0, reserve=True) == 850.0
    monkeypatch.setenv("GEOFF_REPLICA_WALL_S", "100")  # the earlier limit still wins
    assert deadline_from_env(now=0.0, reserve=True) == 100.0
    monkeypatch.delenv("GEOFF_REPLICA_DEADLINE")
    assert deadline_from_env(now=10.0, reserve=True) == 110.0  # no deadline: nothing to reserve


def test_not_last_follows_the_study_s_ensemble_order():
    cfg = SimpleNamespace(ensembles=[{"name": "nvt"}, {"name": "nve"}])
    assert _not_last(cfg, SimpleNamespace(ensemble={"name": "nvt"}))
    assert not _not_last(cfg, SimpleNamespace(ensemble={"name": "nve"}))


def test_a_study_s_nve_leg_keeps_its_reserve(tmp_path, monkeypatch):
    """An NVT run too long for the clock is censored early enough for the NVE leg to run."""
    import csv
    import time

    from conftest import small_model, tiny_cu_study
    from geoff.checkpoint import save
    from geoff.md.study import run_study

    save(small_model("schnet"), tmp_path / "cons.ckpt")
    config = tiny_cu_study(
        "tiny-reserve", [{"name": "cons", "checkpoint": str(tmp_path / "cons.ckpt")}],
        [{"name": "nvt", "ensemble": "bussi", "temperature_K": 400, "tau_fs": 10,
          "time_ps": 1000.0},
         {"name": "nve", "ensemble": "nve", "temperature_K": 400, "time_ps": 1000.0}],
        replicas=True, md={"log_every": 50, "traj_every": 50},
        # a random model: only the clock stops it
        failure={"min_distance_factor": None, "min_distance": 0.01, "max_force": None,
                 "temperature_factor": None})
    monkeypatch.delenv("GEOFF_REPLICA_WALL_S", raising=False)
    monkeypatch.setenv("GEOFF_REPLICA_DEADLINE", f"{time.time() + 6:.3f}")
    monkeypatch.setenv("GEOFF_REPLICA_RESERVE_S", "3")
    run_study(config, output=tmp_path / "out", progress=False)
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["ensemble"] for r in rows} == {"nvt", "nve"}
    for r in rows:  # both legs ran, and the clock stopped both
        assert r["status"] == "ok" and 0 < int(r["steps_done"]) < 10 ** 6, r

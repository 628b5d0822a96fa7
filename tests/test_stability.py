"""The stability study end to end (CLI, config, outputs) and `geoff md`."""
import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

import geoff
from conftest import small_model
from geoff.cli import main
from geoff.md.stability import build_structure, load_config


pytestmark = pytest.mark.usefixtures("one_thread")


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {"cons": folder / "cons.ckpt", "both": folder / "both.ckpt"}
    geoff.save(small_model("schnet"), paths["cons"])
    geoff.save(small_model("schnet", force_head="both"), paths["both"])
    return paths


TINY = {
    "name": "tiny",
    "models": [
        {"name": "conservative", "checkpoint": "${GEOFF_TEST_CONS}", "forces": "conservative"},
        {"name": "direct", "checkpoint": "missing.ckpt", "forces": "direct"},
        {"name": "mts", "checkpoint": "missing.ckpt", "forces": "mts", "mts_steps": 2},
        {"name": "mts-lammps", "checkpoint": "missing.ckpt", "forces": "mts",
         "engine": "lammps"},
    ],
    "systems": [{"name": "cu8", "reference": "emt",
                 "structure": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.61,
                               "cubic": True, "repeat": [1, 1, 2]}}],
    "ensembles": [{"name": "nve", "ensemble": "nve", "temperature_K": 300, "time_ps": 0.02},
                  {"name": "nvt", "ensemble": "bussi", "temperature_K": 300, "tau_fs": 10,
                   "time_ps": 0.02}],
    "timesteps_fs": [1.0, 2.0],
    "seeds": [0, 1],
    "md": {"log_every": 2, "traj_every": 2},
    "failure": {"min_distance_factor": None},
    "analysis": {"rdf_r_max": 4.0, "rdf_bins": 40, "jacobian_structures": 1},
}


def test_tiny_study_end_to_end(tmp_path, checkpoints, monkeypatch, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    monkeypatch.setenv("GEOFF_TEST_CONS", str(checkpoints["cons"]))
    out = tmp_path / "out"
    code = main(["stability", str(config), "--out", str(out), "--no-progress", "--threads", "1",
                 "--checkpoint", f"direct={checkpoints['both']}",
                 "--checkpoint", f"mts={checkpoints['both']}",
                 "--checkpoint", f"mts-lammps={checkpoints['both']}"])
    assert code == 0
    assert str(out / "report.md") in capsys.readouterr().out

    rows = _read_csv(out / "results.csv")
    # 2 reference runs + 4 models x 1 system x 2 ensembles x 2 dt x 2 seeds
    assert len(rows) == 2 + 4 * 2 * 2 * 2
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    assert {r["status"] for r in by_model["mts-lammps"]} == {"skipped"}
    assert "ASE engine" in by_model["mts-lammps"][0]["message"]
    for name in ("ref:emt", "conservative", "direct", "mts"):
        assert {r["status"] for r in by_model[name]} == {"ok"}, by_model[name]
    for r in by_model["conservative"] + by_model["direct"] + by_model["mts"]:
        assert float(r["rdf_error"]) > 0
        assert float(r["steps_per_s"]) > 0
        assert r["drift_meV_atom_ps"] != ""
    for r in by_model["conservative"]:
        assert float(r["speedup"]) == pytest.approx(1.0)
    nvt = [r for r in by_model["conservative"] if r["ensemble"] == "nvt"]
    assert all(r["T_mean"] and r["ke_ks"] for r in nvt)

    summary = _read_csv(out / "summary.csv")
    assert len(summary) == 2 + 4 * 2 * 2

    models = {r["model"]: r for r in _read_csv(out / "models.csv")}
    assert float(models["conservative"]["jacobian_asymmetry"]) < 1e-10
    assert float(models["direct"]["jacobian_asymmetry"]) > 1e-4
    assert float(models["direct"]["direct_speedup_same_model"]) > 0

    run_dir = out / "runs" / "direct" / "cu8" / "nvt" / "dt2fs" / "seed1"
    for name in ("trajectory.extxyz", "thermo.csv", "metrics.json"):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["rdf_reference"] == "ref:emt" and metrics["steps_done"] == 10

    pngs = sorted(p.name for p in out.glob("*.png"))
    for kind in ("energy", "temperature", "rdf"):
        for ens in ("nve", "nvt"):
            assert f"{kind}_cu8_{ens}.png" in pngs
    assert "drift_cu8.png" in pngs
    report = (out / "report.md").read_text()
    for png in pngs:
        assert f"]({png})" in report
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "## Not run" in report and "λ" in report


def test_study_split_over_processes_then_collected(tmp_path, checkpoints, monkeypatch, capsys):
    """--only runs a slice and writes no report; a --resume pass over the whole study reuses
    every run and still writes the per-model table (Jacobian asymmetry, timings)."""
    cfg = dict(TINY, models=TINY["models"][:2], ensembles=TINY["ensembles"][:1],
               timesteps_fs=[1.0], seeds=[0])
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("GEOFF_TEST_CONS", str(checkpoints["cons"]))
    out = tmp_path / "out"
    common = ["stability", str(config), "--out", str(out), "--no-progress", "--threads", "1",
              "--checkpoint", f"direct={checkpoints['both']}", "--resume"]
    for only in ("conservative", "direct", "ref:emt"):
        assert main(common + ["--only", only]) == 0
        assert "collect the report with --resume" in capsys.readouterr().out
        assert not (out / "report.md").exists()
    assert main(common + ["--only", "nonexistent"]) != 0
    assert "no model ['nonexistent']" in capsys.readouterr().err
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/metrics.json")}
    assert len(mtimes) == 3
    assert sorted(p.name for p in (out / "models").glob("*.json")) == ["conservative.json",
                                                                       "direct.json"]
    # a report-only pass over a study with one more model: that model is "not run"
    bigger = dict(cfg, models=TINY["models"][:3])
    config2 = tmp_path / "bigger.yaml"
    config2.write_text(yaml.safe_dump(bigger))
    assert main(["stability", str(config2), "--out", str(out), "--no-progress",
                 "--checkpoint", f"direct={checkpoints['both']}",
                 "--checkpoint", f"mts={checkpoints['both']}", "--report-only"]) == 0
    rows = _read_csv(out / "results.csv")
    assert [r["status"] for r in rows if r["model"] == "mts"] == ["skipped"]
    assert {r["status"] for r in rows if r["model"] != "mts"} == {"ok"}
    assert not list(out.glob("runs/mts/**/metrics.json"))
    assert main(common) == 0
    assert (out / "report.md").exists()
    rows = _read_csv(out / "results.csv")
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 3
    assert all(float(r["rdf_error"]) > 0 for r in rows if r["model"] != "ref:emt")
    models = {r["model"]: r for r in _read_csv(out / "models.csv")}
    assert float(models["conservative"]["jacobian_asymmetry"]) < 1e-10
    assert float(models["direct"]["jacobian_asymmetry"]) > 1e-4


def test_config_paths_env_and_overrides(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    config = tmp_path / "sub" / "c.yaml"
    cfg = dict(TINY, models=[{"name": "a", "checkpoint": "a.ckpt"},
                             {"name": "b", "checkpoint": "${NOT_SET_ANYWHERE_42}"}])
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE_42"):
        load_config(config)
    c = load_config(config, checkpoints={"b": "/abs/b.ckpt"})
    assert c.models[0].checkpoint == str(tmp_path / "sub" / "a.ckpt")
    assert c.models[1].checkpoint == "/abs/b.ckpt"
    with pytest.raises(ValueError, match="unknown models"):
        load_config(config, checkpoints={"zzz": "x"})
    monkeypatch.setenv("NOT_SET_ANYWHERE_42", "b.ckpt")
    assert load_config(config).models[1].checkpoint == str(tmp_path / "sub" / "b.ckpt")
    with pytest.raises(FileNotFoundError, match="--checkpoint a="):
        c.models[0].potential("float64")


def test_demo_config_loads_with_checkpoints():
    demo = Path(geoff.__file__).parent / "md" / "configs" / "demo.yaml"
    cfg = load_config(demo, checkpoints={"conservative": "/m/c.ckpt", "direct": "/m/d.ckpt",
                                         "mts": "/m/b.ckpt"})
    assert [m.forces for m in cfg.models] == ["conservative", "direct", "mts"]
    assert len(build_structure(cfg.systems[0]["structure"], cfg.base_dir)) == 32
    assert cfg.systems[0]["reference"]["name"] == "emt"


def test_benchmark_config_loads(monkeypatch):
    path = Path(geoff.__file__).parents[1] / "benchmarks" / "stability" / "cu_emt.yaml"
    if not path.exists():
        pytest.skip("benchmarks/ not in this checkout")
    monkeypatch.setenv("GEOFF_CKPT_DIR", "/ckpt")
    cfg = load_config(path)
    assert {m.checkpoint for m in cfg.models} >= {"/ckpt/schnet-both.ckpt",
                                                  "/ckpt/nequip-conservative.ckpt"}
    assert cfg.device == "cpu" and cfg.ensembles[0]["timesteps_fs"] == [0.5, 1.0, 2.0, 4.0]


def test_geoff_md_cli(tmp_path, checkpoints):
    from ase.build import bulk

    structure = tmp_path / "cu.extxyz"
    (bulk("Cu", "fcc", a=3.61, cubic=True) * (1, 1, 2)).write(structure)
    out = tmp_path / "md"
    code = main(["md", str(checkpoints["both"]), str(structure), "--forces", "mts",
                 "--mts-steps", "2", "--steps", "8", "--dt", "1", "-T", "300", "--out", str(out),
                 "--log-every", "2", "--traj-every", "4", "--threads", "1"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps_done"] == 8
    assert (out / "trajectory.extxyz").exists() and (out / "thermo.csv").exists()

    bad = small_model("schnet")
    bad.set_normalisation(torch.zeros(2), torch.tensor([float("nan")] * 2))
    geoff.save(bad, tmp_path / "nan.ckpt")
    code = main(["md", str(tmp_path / "nan.ckpt"), str(structure), "--steps", "5",
                 "--out", str(tmp_path / "nan")])
    assert code == 3
    metrics = json.loads((tmp_path / "nan" / "metrics.json").read_text())
    assert metrics["failure_reason"] == "nan" and metrics["failure_step"] == 0


def test_geoff_md_cli_calculator_options(tmp_path, checkpoints, capsys):
    """The speed flags reach the calculator, are kept in metrics.json, and what cannot take
    them says so."""
    from ase.build import bulk

    from geoff.md.engines import make_calculator
    from geoff.md.settings import MDSettings, Reference

    structure = tmp_path / "cu.extxyz"
    (bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)).write(structure)
    out = tmp_path / "md"
    code = main(["md", str(checkpoints["both"]), str(structure), "--steps", "6", "--out",
                 str(out), "--skin", "0.4", "--skin-edges", "keep", "--cuda-graphs", "auto",
                 "--threads", "1"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["calculator"] == {"skin": 0.4, "skin_edges": "keep",
                                                 "cuda_graphs": "auto"}
    settings = MDSettings.from_dict(metrics["settings"])
    calc = make_calculator(str(checkpoints["both"]), settings)
    assert calc.neighbour_cache.skin == 0.4 and not calc.neighbour_cache.filter_edges

    assert main(["md", str(checkpoints["both"]), str(structure), "--skin", "thick",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--skin takes a distance in Å or auto, got 'thick'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown calculator options \['warp'\]"):
        MDSettings(calculator={"warp": 9})
    with pytest.raises(ValueError, match="reference potential has none"):
        make_calculator(Reference("emt"), MDSettings(calculator={"compile": True}))
    assert main(["md", str(checkpoints["both"]), str(structure), "--replicas", "2",
                 "--kernels", "e3nn", "--steps", "2", "--out", str(tmp_path / "reps")]) == 2
    assert "batched replicas take cuda_graphs alone" in capsys.readouterr().err


def test_md_captures_cuda_graphs_on_cuda_unless_told_otherwise(checkpoints, monkeypatch):
    """MD leaves cuda_graphs to the calculator, whose default is "auto" (a shape captured
    from its second call: MD replays from its second step); a given value wins."""
    import inspect

    import geoff.calculators
    from geoff.md.engines import make_calculator
    from geoff.md.settings import MDSettings

    default = inspect.signature(geoff.calculators.GeoffCalculator).parameters["cuda_graphs"]
    assert default.default == "auto"
    seen = []
    monkeypatch.setattr(geoff.calculators, "GeoffCalculator",
                        lambda model, **options: seen.append(options))
    for device, calculator in (("cuda", {}), ("cuda:1", {"cuda_graphs": False}), ("cpu", {})):
        make_calculator(str(checkpoints["cons"]), MDSettings(device=device,
                                                             calculator=calculator))
    assert "cuda_graphs" not in seen[0] and seen[1]["cuda_graphs"] is False
    assert "cuda_graphs" not in seen[2]


def test_study_md_calculator_options_reach_geoff_models_only(tmp_path):
    from geoff.md.study_config import run_settings

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(dict(
        TINY, md={"log_every": 2, "calculator": {"skin": 0.3, "skin_edges": "keep"}},
        models=[{"name": "a", "checkpoint": "a.ckpt"}, {"name": "e", "reference": "emt"},
                {"name": "l", "checkpoint": "a.ckpt", "engine": "lammps"}])))
    cfg = load_config(config)
    by_name = {m.name: m for m in cfg.models}
    ensemble = cfg.ensembles[0]
    geoff_run = run_settings(cfg, by_name["a"], ensemble, 1.0, 0)
    assert geoff_run.calculator == {"skin": 0.3, "skin_edges": "keep"}
    assert not by_name["e"].is_geoff
    assert run_settings(cfg, by_name["e"], ensemble, 1.0, 0).calculator == {}
    assert run_settings(cfg, by_name["l"], ensemble, 1.0, 0).calculator == {}


def test_md_calculator_options_are_geoff_calculator_keywords():
    """MDSettings.calculator's allowed names stay in step with GeoffCalculator's signature
    (ASE's Calculator would swallow an unknown keyword as a parameter)."""
    import inspect

    from geoff.calculators.ase import GeoffCalculator
    from geoff.md.settings import CALCULATOR_OPTIONS

    assert set(CALCULATOR_OPTIONS) <= set(inspect.signature(GeoffCalculator).parameters)

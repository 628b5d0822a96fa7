"""The barrier benchmark and explanation scripts (benchmarks/barriers*.py) on a tiny
synthetic set: rattled Cu/Zr cells, one per "glass", with a smooth per-atom label."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import rattled_triclinic

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

pytestmark = pytest.mark.usefixtures("one_thread")


def glasses(n=5, seed=0):
    """``n`` rattled Cu/Zr cells; label = sum over neighbours of exp(-4 (r - 2.5)^2) + 0.5 for
    Zr, NaN on a third of the atoms."""
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = rattled_triclinic(seed=200 + k, n=(3, 3, 2))
        atoms.numbers[::3] = 40
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        i, d = neighbor_list("id", atoms, 3.4)
        value = np.bincount(i, weights=np.exp(-4 * (d - 2.5) ** 2), minlength=len(atoms))
        value += 0.5 * (atoms.numbers == 40)
        value[rng.random(len(atoms)) < 0.33] = np.nan
        atoms.new_array("barrier_mean", value)
        atoms.info.update(seed=7, glass=k)
        frames.append(atoms)
    return frames


def test_split_is_by_glass_and_keeps_a_validation_glass():
    from barriers import split

    frames = glasses(6)
    train, val, test = split(frames)
    assert [f.info["glass"] for f in test] == [5] and [f.info["glass"] for f in val] == [4]
    assert [f.info["glass"] for f in train] == [0, 1, 2, 3]
    train, val, test = split(frames[:2])
    assert len(train) == 1 and not val and len(test) == 1
    with pytest.raises(SystemExit, match="need at least 2 glasses"):
        split(frames[:1])


def test_bootstrap_intervals_bracket_the_mae():
    from barriers_baselines import bootstrap_mae, paired_mae_difference

    rng = np.random.default_rng(1)
    ref = rng.normal(size=400)
    good, bad = ref + rng.normal(scale=0.1, size=400), ref + rng.normal(scale=0.5, size=400)
    lo, hi = bootstrap_mae(good, ref)
    assert lo < np.abs(good - ref).mean() < hi
    d = paired_mae_difference(good, bad, ref)
    assert d["ci"][0] < d["difference"] < d["ci"][1] < 0  # good is better, clearly


def test_paper_settings_and_unknown_rows():
    from barriers_models import PAPER, job_spec

    spec = job_spec(PAPER, n_train_glasses=6)
    assert spec["model"] == "symgnn"
    assert spec["hparams"]["n_layers"] == 4 and spec["hparams"]["n_features"] == 32
    assert spec["training"]["lr"] == 1e-4 and spec["training"]["batch_size"] == 6
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        job_spec("nope", 1)


@pytest.mark.slow
def test_benchmark_writes_the_table(tmp_path):
    """Baselines (descriptors + ridge learn the smooth label), two model rows (one of them
    SymGNN at the paper's settings), the table, JSON, predictions and kept checkpoints."""
    from barriers import main

    from geoff.data.io import write_dataset

    write_dataset(glasses(5), tmp_path / "d.extxyz")
    res = main(["--data", str(tmp_path / "d.extxyz"), "--models", "schnet", "symgnn-paper",
                "--minutes", "1", "--max-steps", "6", "--cutoff", "3.6", "--out", str(tmp_path / "r" / "barriers"),
                "--keep", str(tmp_path / "models")])
    assert set(res["models"]) == {"schnet", "symgnn-paper"}
    assert res["labelled"]["test"] == res["baselines"]["mean"]["n"] > 10
    ridge = [v for k, v in res["baselines"].items() if k.startswith("descriptors")][0]
    assert ridge["mae"] < 0.5 * res["baselines"]["mean"]["mae"], res
    schnet = res["models"]["schnet"]
    assert np.isfinite(schnet["mae"]) and schnet["parameters"] > 0
    assert schnet["mae_ci"][0] <= schnet["mae"] <= schnet["mae_ci"][1]
    assert "schnet" in res["symmetrisation"]["symgnn-paper"]
    table = (tmp_path / "r" / "barriers_table.md").read_text()
    assert "| schnet |" in table and "descriptors + ridge" in table
    rows = (tmp_path / "r" / "barriers_predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + res["labelled"]["test"] and "symgnn-paper" in rows[0]
    assert json.loads((tmp_path / "r" / "barriers.json").read_text())["models"]
    assert (tmp_path / "models" / "schnet" / "best.ckpt").exists()
    assert (tmp_path / "r" / "barriers_hist.png").stat().st_size > 1000

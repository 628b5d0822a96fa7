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


def icosahedral_frames():
    """A Cu13 icosahedron in a box (its centre is a full-icosahedron Cu, label 1.0; shell Cu
    0.4) and an fcc Cu/Zr cell (no icosahedra, Cu labelled 0.5)."""
    from ase.build import bulk
    from ase.cluster import Icosahedron

    ico = Icosahedron("Cu", 2)
    ico.center(vacuum=6.0)
    ico.pbc = True
    centre = int(np.argmin(np.linalg.norm(ico.positions - ico.positions.mean(0), axis=1)))
    ico.new_array("barrier_mean", np.where(np.arange(len(ico)) == centre, 1.0, 0.4))
    fcc = bulk("Cu", "fcc", a=3.61, cubic=True) * 2
    fcc.numbers[::4] = 40
    fcc.new_array("barrier_mean", np.where(fcc.numbers == 29, 0.5, 0.7))
    return [ico, fcc], centre


def test_icosahedral_label_comparison():
    from barriers_explain import compare_labels

    frames, _ = icosahedral_frames()
    out = compare_labels(frames, "barrier_mean")
    assert out["icosahedral Cu"] == {"n": 1, "mean": 1.0, "sem": None}
    assert out["other Cu"]["n"] == 12 + 24 and 0.4 < out["other Cu"]["mean"] < 0.5
    assert 0 < out["mann_whitney_p"] <= 1


def test_verdict_needs_every_piece_of_evidence():
    from barriers_explain import verdict

    labels = {"icosahedral Cu": {"n": 30, "mean": 0.9}, "other Cu": {"n": 300, "mean": 0.7},
              "mann_whitney_p": 0.001}

    def expl(share_ico, pred_ico):
        return {"icosahedral Cu": {"n": 5, "own_shell_share": {"mean": share_ico},
                                   "prediction": {"mean": pred_ico}},
                "other Cu": {"n": 5, "own_shell_share": {"mean": 0.3},
                             "prediction": {"mean": 0.7}}}

    assert "agree with the hypothesis" in verdict(labels, expl(0.5, 0.9))
    assert "does not support" in verdict(labels, expl(0.2, 0.9))  # explanations disagree
    assert "does not support" in verdict(dict(labels, mann_whitney_p=0.3), expl(0.5, 0.9))
    assert verdict(dict(labels, **{"icosahedral Cu": {"n": 0}}), expl(0.5, 0.9)).startswith(
        "not testable")


def test_explanation_script_writes_the_comparison(tmp_path):
    """barriers_explain.main on a small model: the icosahedral centre is explained and
    pictured, the global table and the verdict are written."""
    from barriers_explain import main
    from conftest import small_model

    import ase.io
    import geoff

    frames, centre = icosahedral_frames()
    ase.io.write(tmp_path / "d.extxyz", frames)
    geoff.save(small_model("schnet", properties=["barrier_mean"]), tmp_path / "m.ckpt")
    res = main([str(tmp_path / "m.ckpt"), str(tmp_path / "d.extxyz"), "--frames", "0",
                "--atoms", "2", "--steps", "3", "--out", str(tmp_path / "e" / "ex")])
    assert res["atoms"][0] == {"frame": 0, "atom": centre, "icosahedral": True, "element": 29}
    assert res["explained"] == 2 and res["picture_atom"] == centre
    ico = res["icosahedral_cu"]["explanations"]["icosahedral Cu"]
    assert ico["n"] == 1 and ico["own_shell_edges"]["mean"] == 12  # its 12 bonds
    assert 0 < ico["own_shell_share"]["mean"] <= 1
    assert res["icosahedral_cu"]["verdict"]
    assert set(res["by_pair_and_shell"]) == {"Cu-Cu"}
    for name in ("ex.json", "ex.png", f"ex_atom{centre}.png", f"ex_atom{centre}.json"):
        assert (tmp_path / "e" / name).exists(), name


def test_split_keeps_up_to_three_validation_glasses():
    from barriers import split

    train, val, test = split(glasses(28))
    assert [f.info["glass"] for f in test] == [23, 24, 25, 26, 27]
    assert [f.info["glass"] for f in val] == [20, 21, 22]
    assert len(train) == 20

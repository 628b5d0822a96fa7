"""The trainer: loss goes down, exact resume, atomic checkpoints, normalisation, splits,
float64 test metrics, the CLI, and data-parallel (torchrun, gloo) agreement with one process."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

import geoff
from geoff.data.io import label, read_dataset, write_dataset
from geoff.training import (GraphDataset, Loss, fit_atomic_energies, make_config, normalisation,
                            read_split, train)
from geoff.training.dataset import GraphLoader

TINY = dict(model="schnet", hparams=dict(n_features=16, n_layers=2, n_rbf=8), cutoff=3.5,
            batch_size=4, val_fraction=0.2, test_fraction=0.2, warmup_steps=0, lr=1e-2,
            progress=False, num_threads=1, seed=0)


def emt_frames(n=20, seed=0):
    """Small rattled, strained Cu cells (4-8 atoms) labelled by EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * ((1, 1, 2) if k % 2 else (1, 1, 1))
        strain = np.eye(3) + rng.normal(scale=0.02, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        atoms.calc = EMT()
        frames.append(label(atoms, energy=atoms.get_potential_energy(),
                            forces=atoms.get_forces(), stress=atoms.get_stress()))
    return frames


@pytest.fixture(scope="module")
def cu_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cu.extxyz"
    write_dataset(emt_frames(20), path)
    return path


def raw_weights(path):
    return geoff.checkpoint.read(path)["extra"]["trainer"]["model"]


def test_loss_decreases(cu_file, tmp_path):
    result = train(dict(TINY, data=str(cu_file), out=str(tmp_path / "run"), epochs=6))
    losses = [row["train_loss"] for row in result["history"]]
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["history"][-1]["val_loss"] < result["history"][0]["val_loss"]
    for name in ("best.ckpt", "last.ckpt", "metrics.csv", "learning_curve.png",
                 "test_metrics.json", "test_metrics.csv", "config.yaml", "train.log"):
        assert (tmp_path / "run" / name).exists(), name
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    for col in ("train_loss", "val_loss", "val_energy_mae_meV_atom", "val_forces_mae_meV_A",
                "val_stress_mae_meV_A3"):
        assert col in header


def test_resume_is_exact(cu_file, tmp_path):
    """Crash mid-epoch after a periodic checkpoint, resume: same weights as never stopping."""
    cfg = dict(TINY, data=str(cu_file), epochs=3, checkpoint_every=2, ema_decay=0.9,
               scheduler="cosine", warmup_steps=2, grad_clip=1.0)
    full = train(dict(cfg, out=str(tmp_path / "full")))
    assert full["steps"] == 9  # 12 training structures, batches of 4

    def crash(trainer):
        if trainer.step == 5:  # last checkpoint: step 4, after the first batch of epoch 2
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(dict(cfg, out=str(tmp_path / "cut")), callbacks=[crash])
    state = geoff.checkpoint.read(tmp_path / "cut" / "last.ckpt")["extra"]["trainer"]
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    resumed = train(dict(cfg, out=str(tmp_path / "cut"), resume=True))
    assert resumed["steps"] == 9
    a, b = raw_weights(tmp_path / "full" / "last.ckpt"), raw_weights(tmp_path / "cut" / "last.ckpt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ema_a = geoff.checkpoint.read(tmp_path / "full" / "last.ckpt")["state_dict"]
    ema_b = geoff.checkpoint.read(tmp_path / "cut" / "last.ckpt")["state_dict"]
    for key in ema_a:
        assert torch.equal(ema_a[key], ema_b[key]), key
    for ra, rb in zip(full["history"], resumed["history"]):
        for key in ("train_loss", "val_loss", "lr", "val_forces_mae_meV_A"):
            assert ra[key] == rb[key], key
    # An option that changes the computation cannot change on resume.
    with pytest.raises(ValueError, match="lr"):
        train(dict(cfg, out=str(tmp_path / "cut"), resume=True, lr=3e-2))


_WRITER = textwrap.dedent("""
    import sys, torch, geoff
    from geoff.potentials import build_model
    model = build_model("schnet", species=["Cu"], cutoff=3.0, n_features=8, n_layers=1, n_rbf=4)
    blob = torch.randn(3_000_000)
    i = 0
    while True:
        geoff.save(model, sys.argv[1], extra={"i": i, "blob": blob})
        print(i, flush=True)
        i += 1
""")


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    """SIGKILL a process that rewrites a 12 MB checkpoint in a loop: the file stays loadable."""
    path = tmp_path / "model.ckpt"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    killed_mid_write = False
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                                text=True)
        lines = [proc.stdout.readline(), proc.stdout.readline()]  # two complete writes
        assert lines[-1].strip().isdigit(), lines
        time.sleep(0.02 * (attempt + 1))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tail = proc.stdout.read().split()
        done = int(tail[-1]) if tail else int(lines[-1])
        leftovers = list(tmp_path.glob(".model.ckpt.*.tmp"))
        killed_mid_write |= bool(leftovers)
        payload = geoff.checkpoint.read(path)  # a complete file, loaded with weights_only
        assert payload["extra"]["i"] >= done
        assert geoff.load(path).species == ["Cu"]
        for tmp in leftovers:
            tmp.unlink()
        if killed_mid_write:
            break
    assert killed_mid_write, "never caught the writer mid-write"


def test_reference_energies_recover_known_shifts():
    rng = np.random.default_rng(3)
    true = np.array([-3.5, -6.25, -1.75])
    counts = rng.integers(0, 20, size=(40, 3)).astype(float)
    counts[:, 0] += 1
    energies = counts @ true
    np.testing.assert_allclose(fit_atomic_energies(counts, energies), true, atol=1e-10)
    # With noise: still close; an absent species gets 0.
    noisy = energies + rng.normal(scale=1e-3, size=len(energies))
    fit = fit_atomic_energies(np.c_[counts, np.zeros(40)], noisy)
    np.testing.assert_allclose(fit[:3], true, atol=1e-3)
    assert fit[3] == 0.0

    # Through a dataset of labelled structures (Cu/Zr/Al with per-element shifts + forces).
    frames = []
    for k in range(12):
        n = 3 + k % 5
        symbols = rng.choice(["Cu", "Zr", "Al"], size=n)
        atoms = Atoms(symbols, positions=rng.uniform(0, 6, size=(n, 3)), cell=np.eye(3) * 6,
                      pbc=True)
        e = sum({"Cu": -3.5, "Zr": -6.25, "Al": -1.75}[s] for s in symbols)
        frames.append(label(atoms, energy=e, forces=np.full((n, 3), 0.2)))
    species = ["Al", "Cu", "Zr"]
    data = GraphDataset.from_frames(frames, species, cutoff=3.0)
    norm = normalisation(data, species)
    np.testing.assert_allclose(norm["atomic_energies"], [-1.75, -3.5, -6.25], atol=1e-9)
    assert norm["scale"] == pytest.approx(0.2)


def test_loss_terms_and_masks():
    """Per-atom energy normalisation, masks, and the direct-force term."""
    batch = {"batch": torch.tensor([0, 0, 1]), "n_atoms": torch.tensor([2.0, 1.0]),
             "energy": torch.tensor([1.0, 2.0]), "energy_mask": torch.tensor([1.0, 1.0]),
             "forces": torch.zeros(3, 3), "forces_mask": torch.tensor([1.0, 0.0]),
             "stress": torch.zeros(2, 3, 3), "stress_mask": torch.tensor([0.0, 0.0]),
             "energies": torch.zeros(3), "energies_mask": torch.tensor([0.0, 0.0])}
    out = {"energy": torch.tensor([3.0, 2.0]), "forces": torch.ones(3, 3),
           "direct_forces": 2 * torch.ones(3, 3), "energies": torch.zeros(3)}
    loss = Loss({"energy": 1.0, "forces": 10.0, "direct_forces": 1.0})
    total, stats = loss(out, batch, {"energy": 2, "forces": 2, "stress": 0, "energies": 0})
    # energy: ((3-1)/2)^2 + 0 over 2 structures = 0.5; forces: 1 over 6 comps = 1; direct: 4
    assert float(total) == pytest.approx(0.5 + 10.0 * 1.0 + 4.0)
    assert float(stats["forces_n"]) == 6 and "stress_n" not in stats  # no stress predicted


def test_splits_and_float64_test_metrics(cu_file, tmp_path):
    out = tmp_path / "run"
    result = train(dict(TINY, data=str(cu_file), out=str(out), epochs=2, force_head="both"))
    split = read_split(out)
    assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(20))
    assert [len(split[k]) for k in ("train", "val", "test")] == [12, 4, 4]
    assert set(map(str, (out / f"split_{k}.txt" for k in ("train", "val", "test")))) \
        == set(result["splits"])
    metrics = result["test_metrics"]
    assert metrics["dtype"] == "float64"
    assert json.loads((out / "test_metrics.json").read_text()) == metrics
    # The reported test MAEs are those of best.ckpt in float64 through the ASE calculator.
    from geoff.calculators import GeoffCalculator

    frames = read_dataset(cu_file)
    calc = GeoffCalculator(str(out / "best.ckpt"), dtype="float64")
    e_err, f_err = [], []
    for k in split["test"]:
        atoms = frames[int(k)]
        ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
        atoms = atoms.copy()
        atoms.calc = calc
        e_err.append(abs(atoms.get_potential_energy() - ref_e) / len(atoms))
        f_err.append(np.abs(atoms.get_forces() - ref_f).ravel())
    assert metrics["energy_mae_meV_atom"] == pytest.approx(1e3 * np.mean(e_err), rel=1e-9)
    assert metrics["forces_mae_meV_A"] == pytest.approx(1e3 * np.concatenate(f_err).mean(), rel=1e-9)
    assert "direct_forces_mae_meV_A" in metrics
    # The same split again, from the files.
    again = train(dict(TINY, data=str(cu_file), out=str(tmp_path / "again"), epochs=1,
                       splits_from=str(out), seed=5))
    assert {k: v.tolist() for k, v in read_split(tmp_path / "again").items()} == \
        {k: v.tolist() for k, v in split.items()}
    assert again["test_metrics"]["n_structures"] == 4


def test_loader_order_is_seeded_and_sharded(cu_file):
    data = GraphDataset.from_frames(read_dataset(cu_file), ["Cu"], cutoff=3.5)
    one = GraphLoader(data, np.arange(20), 6, shuffle=True, seed=1)
    assert [b.tolist() for b in one.global_batches(3)] == \
        [b.tolist() for b in GraphLoader(data, np.arange(20), 6, shuffle=True, seed=1).global_batches(3)]
    assert one.global_batches(3)[0].tolist() != one.global_batches(4)[0].tolist()
    # Two ranks: shards of each global batch, with the global label counts.
    ranks = [GraphLoader(data, np.arange(20), 6, shuffle=True, seed=1, rank=r, world_size=2)
             for r in (0, 1)]
    assert len(ranks[0]) == 4  # 20 = 3 x 6 + 2: the last batch (2 structures) still splits
    for (g0, c0), (g1, c1), glob in zip(ranks[0].batches(2), ranks[1].batches(2),
                                        one.global_batches(2)):
        assert c0 == c1 == data.label_counts(glob)
        assert g0["positions"].shape[0] + g1["positions"].shape[0] == data.n_atoms[glob].sum()


def test_cli_config_and_flags(cu_file, tmp_path):
    from geoff.cli import build_parser, main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {cu_file}\nepochs: 5\nhparams: {{n_features: 8, n_layers: 1}}\n"
                   "batch_size: 2\n")
    args = build_parser().parse_args(["train", "--config", str(cfg), "--epochs", "1",
                                      "--hparams", "n_features=8", "n_layers=1", "n_rbf=4",
                                      "--cutoff", "3.5", "--out", str(tmp_path / "cli"),
                                      "--no-progress", "--num-threads", "1"])
    from geoff.training.config import from_args

    merged = from_args(args)
    assert merged["epochs"] == 1 and merged["batch_size"] == 2
    assert merged["hparams"] == {"n_features": 8, "n_layers": 1, "n_rbf": 4}
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--cutoff", "3.5",
                 "--out", str(tmp_path / "cli"), "--no-progress", "--num-threads", "1"]) == 0
    assert (tmp_path / "cli" / "best.ckpt").exists()
    # Every option has a flag in --help, with its default.
    from geoff.training.config import OPTIONS

    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for opt in OPTIONS:
        assert "--" + opt.name.replace("_", "-") in text, opt.name
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        make_config({"data": "x.extxyz", "epoch": 3})
    # Resume from the folder alone (its config.yaml), training one more epoch.
    assert main(["train", "--resume", "--out", str(tmp_path / "cli"), "--epochs", "2"]) == 0
    state = geoff.checkpoint.read(tmp_path / "cli" / "last.ckpt")["extra"]["trainer"]
    assert state["epoch"] == 2 and len(state["history"]) == 2
    # A second run into the same folder is refused rather than overwriting it.
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "cli"),
                 "--no-progress"]) == 2


@pytest.mark.slow
def test_torchrun_two_processes_match_one(cu_file, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) follows the single-process run (float64)."""
    if shutil.which("torchrun") is None and not os.path.exists(
            os.path.join(os.path.dirname(sys.executable), "torchrun")):
        pytest.skip("torchrun not installed")
    cfg = dict(TINY, data=str(cu_file), epochs=2, dtype="float64", ema_decay=0.0,
               val_fraction=0.1, test_fraction=0.1)  # 16 training structures: 4 batches of 4
    single = train(dict(cfg, out=str(tmp_path / "one")))
    (tmp_path / "cfg.yaml").write_text(json.dumps(dict(cfg, out=str(tmp_path / "two"))))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "geoff.cli", "train",
           "--config", str(tmp_path / "cfg.yaml")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import csv

    with open(tmp_path / "two" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row, ref in zip(rows, single["history"]):
        assert float(row["train_loss"]) == pytest.approx(ref["train_loss"], rel=1e-5)
        assert float(row["val_loss"]) == pytest.approx(ref["val_loss"], rel=1e-5)
    a, b = raw_weights(tmp_path / "one" / "last.ckpt"), raw_weights(tmp_path / "two" / "last.ckpt")
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-9, atol=1e-11)

"""Per-atom barrier benchmark on held-out glasses: baselines and geoff models.

  .venv/bin/python benchmarks/barriers.py --data examples/barriers/cuzr_barriers.extxyz \
      --models schnet painn symgnn --minutes 2 --out benchmarks/results/barriers.md

Split by glass (one frame = one glass): the last ``--test-glasses`` frames are the test set,
the one before them validation (when at least three remain), the rest training. Baselines:
the global and per-element mean of the training atoms, and descriptors + ridge
(``barriers_baselines.py``). Models: ``geoff.training.train`` with ``target`` = the label,
energy and force weights 0 (property only), ``--minutes`` of training each (CPU, one thread),
small hyper-parameters (``HPARAMS``). Metrics on the labelled test atoms: MAE (eV), R²,
Spearman. Also writes the barrier histogram next to the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from barriers_baselines import descriptors, metrics, ridge_cv, ridge_fit, ridge_predict  # noqa

HPARAMS = {
    "schnet": dict(n_features=32, n_layers=3, n_rbf=16),
    "painn": dict(n_features=32, n_layers=3, n_rbf=16),
    "symgnn": dict(n_features=32, n_layers=3, n_rbf=16, n_samples=4),
    "faenet": dict(n_features=32, n_layers=3, n_rbf=16),
    "egnn": dict(n_features=32, n_layers=3, n_rbf=16),
    "nequip": dict(n_features=16, n_layers=3, l_max=2, n_rbf=8),
    "mace": dict(n_features=16, n_layers=2, l_max=2, correlation=2, n_rbf=8),
    "dimenet": dict(n_features=32, n_layers=2, n_rbf=6, l_max=3),
}


def labelled(frames, key):
    """(values, species numbers, glass index) of the labelled atoms."""
    v = np.concatenate([f.arrays[key] for f in frames])
    z = np.concatenate([f.numbers for f in frames])
    g = np.concatenate([np.full(len(f), k) for k, f in enumerate(frames)])
    ok = np.isfinite(v)
    return v[ok], z[ok], g[ok]


def baselines(train, test, key):
    y_tr, z_tr, _ = labelled(train, key)
    y_te, z_te, _ = labelled(test, key)
    rows = {"mean": metrics(np.full_like(y_te, y_tr.mean()), y_te)}
    per_el = np.array([y_tr[z_tr == z].mean() if (z_tr == z).any() else y_tr.mean()
                       for z in z_te])
    rows["per-element mean"] = metrics(per_el, y_te)
    xs = [descriptors(f)[np.isfinite(f.arrays[key])] for f in train]
    ys = [f.arrays[key][np.isfinite(f.arrays[key])] for f in train]
    alpha = ridge_cv(xs, ys)
    model = ridge_fit(np.concatenate(xs), np.concatenate(ys), alpha)
    x_te = np.concatenate([descriptors(f)[np.isfinite(f.arrays[key])] for f in test])
    rows[f"descriptors + ridge (alpha {alpha:g})"] = metrics(ridge_predict(model, x_te), y_te)
    return rows


def train_model(name, files, key, minutes, workdir, seed=0):
    import geoff
    from geoff.calculators.ase import GeoffCalculator
    from geoff.data.io import read_dataset
    from geoff.training import train

    cfg = dict(model=name, hparams=HPARAMS.get(name, {}), cutoff=5.0, data=str(files["train"]),
               val_data=str(files["val"]) if files.get("val") else None,
               test_data=str(files["test"]), val_fraction=0.0 if files.get("val") else 0.2,
               target=key, energy_weight=0.0, forces_weight=0.0, batch_size=1, lr=3e-3,
               epochs=100000, max_time=minutes, progress=False, num_threads=1, seed=seed,
               out=str(workdir / name), overwrite=True)
    t0 = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - t0
    model = geoff.load(workdir / name / "best.ckpt")
    preds, refs = [], []
    for atoms in read_dataset(files["test"]):
        atoms.calc = GeoffCalculator(model)
        atoms.get_potential_energy()
        ok = np.isfinite(atoms.arrays[key])
        preds.append(atoms.calc.results[key][ok])
        refs.append(atoms.arrays[key][ok])
    row = metrics(np.concatenate(preds), np.concatenate(refs))
    row.update(seconds=round(seconds, 1),
               parameters=int(sum(p.numel() for p in model.parameters())))
    return row


def histogram(frames, key, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, z, _ = labelled(frames, key)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, max(float(y.max()), 0.1), 25)
    for el, name, colour in ((29, "Cu", "#c8702a"), (40, "Zr", "#3a6fb0")):
        ax.hist(y[z == el], bins=bins, alpha=0.7, label=f"{name} ({(z == el).sum()})",
                color=colour)
    ax.set_xlabel(f"{key} (eV)")
    ax.set_ylabel("atoms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def table(results) -> str:
    """The markdown table of every row (baselines, then models)."""
    lines = ["| predictor | MAE (eV) | R² | Spearman | test atoms | train time (s) | parameters |",
             "|---|---|---|---|---|---|---|"]
    rows = [(k, v) for k, v in results["baselines"].items()] + \
        [(k, v) for k, v in results["models"].items()]
    for name, r in rows:
        lines.append(f"| {name} | {r['mae']:.3f} | {r['r2']:.2f} | {r['spearman']:.2f} | "
                     f"{r['n']} | {r.get('seconds', '')} | {r.get('parameters', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from geoff.data.io import read_dataset, write_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--target", default="barrier_mean")
    p.add_argument("--models", nargs="*", default=["schnet", "painn", "symgnn"])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--test-glasses", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/barriers.md")
    args = p.parse_args(argv)
    frames = read_dataset(args.data)
    n_test = args.test_glasses
    if len(frames) < n_test + 1:
        raise SystemExit(f"need at least {n_test + 1} glasses, {args.data} has {len(frames)}")
    test = frames[-n_test:]
    rest = frames[:-n_test]
    val = rest[-1:] if len(rest) >= 3 else []
    train = rest[:-1] if val else rest
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    histogram(frames, args.target, out.with_name(out.stem + "_hist.png"))
    results = {"baselines": baselines(train, test, args.target), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"train": tmp / "train.extxyz", "test": tmp / "test.extxyz"}
        write_dataset(train, files["train"])
        write_dataset(test, files["test"])
        if val:
            files["val"] = tmp / "val.extxyz"
            write_dataset(val, files["val"])
        for name in args.models:
            results["models"][name] = train_model(name, files, args.target, args.minutes, tmp)
            print(name, results["models"][name], flush=True)
    results["split"] = {k: [int(f.info.get("seed", -1)) for f in v]
                        for k, v in (("train", train), ("val", val), ("test", test))}
    results["labelled"] = {k: int(labelled(v, args.target)[0].size) if v else 0
                           for k, v in (("train", train), ("val", val), ("test", test))}
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_name(out.stem + "_table.md").write_text(table(results))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Per-atom barrier benchmark on held-out glasses: baselines and every geoff model.

  .venv/bin/python benchmarks/barriers.py --data examples/barriers/cuzr_barriers.extxyz \
      --minutes 2 --jobs 2 --out benchmarks/results/barriers
  python3 benchmarks/barriers.py --data D.extxyz --device cuda:0,cuda:1 --jobs 9 --minutes 6

Split by glass (one frame = one glass): the last ``--test-glasses`` frames (default a fifth,
at least one) are the test set, the 1-3 before them validation (a sixth of the rest, when at
least two remain for training), the rest training. Rows: the global and per-element mean of the training
atoms, descriptors + ridge (``barriers_baselines.py``), the eight zoo models at one wall-clock
budget and SymGNN at the paper's settings (``barriers_models.py``: ``--models`` picks rows,
``all`` = the eight + ``symgnn-paper``). Metrics on the labelled test atoms: MAE (eV) with a
95 % bootstrap interval over atoms, R², Spearman; and, for SymGNN, the paired bootstrap of its
MAE minus each other model's (the paper's claim: symmetrisation helps).

Writes ``<out>.json`` (everything, updated as each job finishes), ``<out>_table.md``,
``<out>_predictions.csv`` (every test atom: glass, index, element, label, each row's
prediction), ``<out>_hist.png`` (label histogram) and keeps each model's ``best.ckpt`` under
``--keep`` (for ``barriers_explain.py``). ``--deadline-s`` skips jobs that cannot finish in
time (GPU calls have a wall-clock limit).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from barriers_baselines import (bootstrap_mae, descriptors, metrics, paired_mae_difference,  # noqa
                                ridge_cv, ridge_fit, ridge_predict)
from barriers_models import CUTOFF, MODELS, PAPER, run_jobs  # noqa: E402

ELEMENTS = {29: "Cu", 40: "Zr"}


def labelled(frames, key):
    """(values, species numbers, glass index, atom index) of the labelled atoms."""
    v = np.concatenate([f.arrays[key] for f in frames])
    z = np.concatenate([f.numbers for f in frames])
    g = np.concatenate([np.full(len(f), k) for k, f in enumerate(frames)])
    a = np.concatenate([np.arange(len(f)) for f in frames])
    ok = np.isfinite(v)
    return v[ok], z[ok], g[ok], a[ok]


def split(frames, test_glasses=None):
    """(train, val, test) lists of frames, by glass (see the module docstring)."""
    n_test = test_glasses or max(1, len(frames) // 5)
    if len(frames) < n_test + 1:
        raise SystemExit(f"need at least {n_test + 1} glasses (one to train on, "
                         f"{n_test} to test on); the data has {len(frames)}")
    test, rest = frames[-n_test:], frames[:-n_test]
    # validation: a sixth of the rest (1 to 3 glasses) when at least two glasses remain to
    # train on; one glass (~80 labels) made early stopping and best.ckpt a coin toss
    n_val = min(3, max(1, len(rest) // 6)) if len(rest) >= 3 else 0
    return rest[:len(rest) - n_val], rest[len(rest) - n_val:], test


def baselines(train, test, key):
    """Predictions of the labelled test atoms by the three baselines: {row: array}."""
    y_tr, z_tr, _, _ = labelled(train, key)
    _, z_te, _, _ = labelled(test, key)
    rows = {"mean": np.full(z_te.shape, y_tr.mean())}
    rows["per-element mean"] = np.array([y_tr[z_tr == z].mean() if (z_tr == z).any()
                                         else y_tr.mean() for z in z_te])
    xs = [descriptors(f)[np.isfinite(f.arrays[key])] for f in train]
    ys = [f.arrays[key][np.isfinite(f.arrays[key])] for f in train]
    alpha = ridge_cv(xs, ys)
    model = ridge_fit(np.concatenate(xs), np.concatenate(ys), alpha)
    x_te = np.concatenate([descriptors(f)[np.isfinite(f.arrays[key])] for f in test])
    rows[f"descriptors + ridge (alpha {alpha:g})"] = ridge_predict(model, x_te)
    return rows


def score(pred, ref) -> dict:
    row = metrics(np.asarray(pred), ref)
    row["mae_ci"] = bootstrap_mae(np.asarray(pred), ref)
    return row


def symmetrisation(results, ref) -> dict:
    """For each SymGNN row: MAE(SymGNN) - MAE(other) per other model, paired bootstrap CI."""
    preds = {k: np.asarray(v["pred"]) for k, v in results["models"].items() if "pred" in v}
    out = {}
    for sym in ("symgnn", PAPER):
        if sym in preds:
            out[sym] = {k: paired_mae_difference(preds[sym], p, ref)
                        for k, p in preds.items() if k not in ("symgnn", PAPER)}
    return out


def histogram(frames, key, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, z, _, _ = labelled(frames, key)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, max(float(y.max()), 0.1), 25)
    for el, colour in ((29, "#c8702a"), (40, "#3a6fb0")):
        ax.hist(y[z == el], bins=bins, alpha=0.7, color=colour,
                label=f"{ELEMENTS[el]} ({(z == el).sum()})")
    ax.set_xlabel(f"{key} (eV)")
    ax.set_ylabel("atoms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def table(results) -> str:
    """The markdown table of every row (baselines, then models by MAE) and the SymGNN test."""
    lines = ["| predictor | MAE (eV) [95 % CI] | R² | Spearman | test atoms | train (s) | "
             "steps (epochs) | parameters |", "|---|---|---|---|---|---|---|---|"]
    models = sorted(((k, v) for k, v in results["models"].items() if "mae" in v),
                    key=lambda kv: kv[1]["mae"])
    for name, r in list(results["baselines"].items()) + models:
        lo, hi = r["mae_ci"]
        lines.append(f"| {name} | {r['mae']:.3f} [{lo:.3f}, {hi:.3f}] | {r['r2']:.2f} | "
                     f"{r['spearman']:.2f} | {r['n']} | {r.get('seconds', '')} | "
                     f"{_steps(r)} | {r.get('parameters', '')} |")
    for name, r in results["models"].items():
        if "error" in r:
            lines.append(f"| {name} | not run: {r['error'][:80]} | | | | | | |")
    for sym, diffs in results.get("symmetrisation", {}).items():
        lines.append(f"\n{sym}: MAE({sym}) − MAE(other), eV, paired bootstrap 95 % CI "
                     "(negative: SymGNN better)\n")
        lines.append("| other | difference [95 % CI] |\n|---|---|")
        for other, d in sorted(diffs.items(), key=lambda kv: kv[1]["difference"]):
            lines.append(f"| {other} | {d['difference']:+.4f} [{d['ci'][0]:+.4f}, "
                         f"{d['ci'][1]:+.4f}] |")
    return "\n".join(lines) + "\n"


def _steps(row) -> str:
    return f"{row['steps']} ({row.get('epochs')})" if row.get("steps") is not None else ""


def write_predictions(path, test, key, results):
    _, z, g, a = labelled(test, key)
    ref = labelled(test, key)[0]
    rows = {**{k: v for k, v in results["_baseline_preds"].items()},
            **{k: v["pred"] for k, v in results["models"].items() if "pred" in v}}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["glass_seed", "atom", "element", key] + list(rows))
        seeds = [int(f.info.get("seed", k)) * 1000 + int(f.info.get("glass", k))
                 for k, f in enumerate(test)]
        for n in range(ref.size):
            w.writerow([seeds[g[n]], int(a[n]), ELEMENTS.get(int(z[n]), z[n]),
                        f"{ref[n]:.5f}"] + [f"{float(v[n]):.5f}" for v in rows.values()])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="extxyz, one glass per frame")
    p.add_argument("--target", default="barrier_mean")
    p.add_argument("--models", nargs="*", default=["all"],
                   help=f"rows: {' '.join(MODELS)} gemnet {PAPER}, or 'all' "
                        "(the eight and symgnn-paper)")
    p.add_argument("--minutes", type=float, default=2.0, help="training budget per model")
    p.add_argument("--max-steps", type=int, default=0,
                   help="also stop each model after this many optimizer steps (0: no cap)")
    p.add_argument("--jobs", type=int, default=1, help="model jobs in parallel")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, or a comma list (cuda:0,cuda:1) handed out round robin")
    p.add_argument("--cutoff", type=float, default=CUTOFF, help="graph cutoff of every model, Å")
    p.add_argument("--test-glasses", type=int, default=None)
    p.add_argument("--deadline-s", type=float, default=None,
                   help="skip model jobs that would end later than this many seconds from now")
    p.add_argument("--keep", default="runs/barriers", help="folder for the trained models")
    p.add_argument("--out", default="benchmarks/results/barriers",
                   help="output prefix: <out>.json, <out>_table.md, <out>_hist.png, ...")
    args = p.parse_args(argv)
    if "all" in args.models:  # 'all' expands in place; other names may be added beside it
        rest = [m for m in args.models if m != "all" and m not in MODELS and m != PAPER]
        args.models = list(MODELS) + [PAPER] + rest
    return args


def main(argv=None):
    from geoff.data.io import read_dataset, write_dataset

    args = parse_args(argv)
    start = time.time()
    deadline = start + args.deadline_s if args.deadline_s else None
    frames = read_dataset(args.data)
    train, val, test = split(frames, args.test_glasses)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    histogram(frames, args.target, out.with_name(out.stem + "_hist.png"))
    ref = labelled(test, args.target)[0]
    base = baselines(train, test, args.target)
    results = {"data": args.data, "target": args.target, "minutes": args.minutes,
               "cutoff": args.cutoff,
               "device": args.device, "baselines": {k: score(v, ref) for k, v in base.items()},
               "models": {}, "_baseline_preds": {k: v.tolist() for k, v in base.items()},
               "split": {k: [f"{f.info.get('seed', '?')}/{f.info.get('glass', i)}"
                             for i, f in enumerate(v)]
                         for k, v in (("train", train), ("val", val), ("test", test))},
               "labelled": {k: int(labelled(v, args.target)[0].size) if v else 0
                            for k, v in (("train", train), ("val", val), ("test", test))}}

    def record(res):
        row = res["row"]
        body = {k: v for k, v in res.items() if k != "row"}
        results["models"][row] = dict(body, **score(body["pred"], ref)) if "pred" in body \
            else body
        results["symmetrisation"] = symmetrisation(results, ref)
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))
        out.with_name(out.stem + "_table.md").write_text(table(results))
        print(row, {k: v for k, v in results["models"][row].items() if k != "pred"}, flush=True)

    keep = Path(args.keep)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"train": f"{tmp}/train.extxyz", "test": f"{tmp}/test.extxyz"}
        write_dataset(train, files["train"])
        write_dataset(test, files["test"])
        if val:
            files["val"] = f"{tmp}/val.extxyz"
            write_dataset(val, files["val"])
        run_jobs(args.models, len(train), files, args.target, args.minutes, str(keep),
                 args.device.split(","), args.jobs, deadline, on_result=record,
                 max_steps=args.max_steps, cutoff=args.cutoff)
    results["seconds"] = round(time.time() - start, 1)
    write_predictions(out.with_name(out.stem + "_predictions.csv"), test, args.target, results)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_name(out.stem + "_table.md").write_text(table(results))
    print(table(results))
    return results


if __name__ == "__main__":
    main()

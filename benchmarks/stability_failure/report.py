"""The failure study's reading: time to failure per run, per checkpoint, against force MAE.

Time to failure (ps) of a run: the step of its first failed criterion x dt; for the liquid's
NVT runs also the end of the first RDF window past the threshold (``geoff.md.rdf_failure``),
whichever comes first (read from each run's ``metrics.json``). A run that survived is censored at its length (``stopped``: it was
cut short by its process's deadline, not by its planned length); medians over seeds are
reported as ">= L" when half or more of the seeds survived. The liquid's reference RDF is
``<data-dir>/<system>.rdf_ref.json`` (``run.py data``).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import List

import numpy as np

from headline import headline_markdown

FIELDS = ["system", "budget", "model", "head", "forces", "ensemble", "seed", "status",
          "failed", "ttf_ps", "length_ps", "stopped", "failure_reason", "rdf_failure_ps",
          "drift_meV_atom_ps", "force_mae_meV_A", "direct_force_mae_meV_A"]


def _run_metrics(folder: Path) -> List[dict]:
    """Every run's ``metrics.json`` under a study folder (what each ``geoff stability --only``
    process wrote, whether or not a collecting pass made ``results.csv``)."""
    return [json.loads(p.read_text())
            for p in sorted(Path(folder).glob("runs/*/*/*/*/*/metrics.json"))]


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _mae(out: Path, system: str, label: str, budget: str):
    path = out / "train" / system / f"{label}-{budget}" / "test_metrics.json"
    if not path.exists():
        return float("nan"), float("nan")
    m = json.loads(path.read_text())
    return (_float(m.get("forces_mae_meV_A")), _float(m.get("direct_forces_mae_meV_A")))


def _rdf_failure(folder: Path, row: dict, rdf_cfg: dict, g_ref):
    import ase.io

    from geoff.md.rdf_failure import rdf_failure_time

    traj = (folder / "runs" / row["model"] / row["system"] / row["ensemble"] /
            f"dt{float(row['dt_fs']):g}fs" / f"seed{row['seed']}" / "trajectory.extxyz")
    if g_ref is None or not traj.exists():
        return float("nan")
    frames = [a for a in ase.io.read(traj, index=":") if "failure" not in a.info]
    t = rdf_failure_time(frames, g_ref, rdf_cfg["threshold"], rdf_cfg["window_ps"],
                         rdf_cfg.get("r_max", 6.0), rdf_cfg.get("n_bins", 120))
    return float("nan") if t is None else t


def _reference_rdf(data_dir: Path, system: dict):
    """g(r) of the system's reference potential (``run.py data``), or None."""
    path = Path(data_dir) / f"{system['name']}.rdf_ref.json"
    if not system.get("rdf") or not path.exists():
        return None
    return np.asarray(json.loads(path.read_text())["g"])


def _rdf_times(tasks: list, workers: int) -> List[float]:
    """``_rdf_failure(*task)`` of every task, over ``workers`` processes (each reads one
    run's trajectory: the liquid's long runs make this the slow part of the report)."""
    if workers <= 1 or len(tasks) <= 1:
        return [_rdf_failure(*t) for t in tasks]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(tasks))) as pool:
        return list(pool.map(_rdf_failure, *zip(*tasks)))


def run_rows(cfg: dict, out: Path, checkpoints, data_dir: Path,
             workers: int = 1) -> List[dict]:
    heads = {f"{label}": (model, head, forces) for label, model, head, forces in checkpoints}
    rows, tasks = [], []
    for system in cfg["systems"]:
        for budget in cfg["train"]["budgets"]:
            folder = out / "study" / f"{system['name']}-{budget}"
            results = _run_metrics(folder)
            g_ref = _reference_rdf(data_dir, system)
            for r in results:
                label = r["model"][: -len(budget) - 1]
                if r["model"].startswith("ref:") or label not in heads:
                    continue
                model, head, forces = heads[label]
                length = _float(r.get("simulated_ps"))
                failed = r["status"] == "failed"
                ttf = _float(r.get("failure_time_ps")) if failed else length
                stopped = not failed and r["status"] == "ok" and \
                    _float(r.get("steps_done")) < _float(r.get("steps_requested"))
                if system.get("rdf") and r["ensemble"] == "nvt" and r["status"] in ("ok",
                                                                                     "failed"):
                    tasks.append((len(rows), (folder, r, system["rdf"], g_ref)))
                mae, dmae = _mae(out, system["name"], label, budget)
                rows.append({"system": system["name"], "budget": budget, "model": model,
                             "head": head, "forces": forces, "ensemble": r["ensemble"],
                             "seed": int(r["seed"]), "status": r["status"], "failed": failed,
                             "ttf_ps": ttf, "length_ps": length, "stopped": stopped,
                             "failure_reason": r.get("failure_reason") or "",
                             "rdf_failure_ps": float("nan"),
                             "drift_meV_atom_ps": _float(r.get("drift_meV_atom_ps")),
                             "force_mae_meV_A": mae, "direct_force_mae_meV_A": dmae})
    for (k, _), t in zip(tasks, _rdf_times([t for _, t in tasks], workers)):
        row = rows[k]
        row["rdf_failure_ps"] = t
        if math.isfinite(t) and t < row["ttf_ps"]:  # the RDF failed first (or alone)
            row["failure_reason"] = row["failure_reason"] if row["failed"] else "rdf"
            row["ttf_ps"], row["failed"] = t, True
    return rows


def ran(r: dict) -> bool:
    """Whether a run simulated anything: ok or failed, and not stopped by the clock before its
    first step (a process starved of CPU past its deadline leaves such runs: "not started")."""
    return r["status"] in ("ok", "failed") and (bool(r["failed"]) or r["length_ps"] > 0)


def headline(rows: List[dict]) -> List[dict]:
    """Per system, budget, model and head: NVT time to failure over seeds, NVE drift (runs
    that never started are counted apart, ``not_started``)."""
    keys = sorted({(r["system"], r["budget"], r["model"], r["head"]) for r in rows})
    out = []
    for key in keys:
        mine = [r for r in rows if (r["system"], r["budget"], r["model"], r["head"]) == key]
        nvt = [r for r in mine if r["ensemble"] == "nvt" and ran(r)]
        nve = [r for r in mine if r["ensemble"] == "nve" and ran(r)]
        ttf = np.array([r["ttf_ps"] for r in nvt])
        n_failed = sum(r["failed"] for r in nvt)
        censored = len(nvt) and n_failed * 2 <= len(nvt)
        out.append({"system": key[0], "budget": key[1], "model": key[2], "head": key[3],
                    "force_mae_meV_A": mine[0]["force_mae_meV_A"], "runs": len(nvt),
                    "failed": n_failed,
                    "median_ttf_ps": float(np.median(ttf)) if len(ttf) else float("nan"),
                    "ttf_censored": bool(censored),
                    "nvt_stopped": sum(bool(r["stopped"]) for r in nvt),
                    "nvt_max_ps": max((r["length_ps"] for r in nvt), default=float("nan")),
                    "nve_runs": len(nve), "nve_failed": sum(r["failed"] for r in nve),
                    "nve_drift_meV_atom_ps": float(np.median([r["drift_meV_atom_ps"]
                                                              for r in nve]))
                    if nve else float("nan"),
                    "not_started": sum(r["status"] == "ok" and not ran(r) for r in mine),
                    "reasons": ",".join(sorted({r["failure_reason"] for r in nvt
                                                if r["failed"]})),
                    # merged calls (merge.py): which call each of the runs came from
                    **({"calls": ",".join(sorted({str(r["call"]) for r in mine}))}
                       if any(r.get("call") for r in mine) else {})})
    return out


def _write_csv(path: Path, rows: List[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _plot(head: List[dict], path: Path) -> None:
    """Median time to failure against test force MAE, one panel per system: colour = model,
    marker = head, filled = the median is a failure time, open = censored (the clock or the
    run's length stopped it first: the true median is at least this), large = long budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    systems = sorted({h["system"] for h in head})
    models = sorted({h["model"] for h in head})
    palette = [plt.get_cmap("tab10")(k) for k in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # no grey (7)
    colour = {m: palette[k % len(palette)] for k, m in enumerate(models)}
    markers = {"conservative": "o", "direct": "s", "both": "^"}
    fig, axes = plt.subplots(1, max(len(systems), 1), figsize=(4.6 * max(len(systems), 1), 4.2),
                             squeeze=False)
    for ax, system in zip(axes[0], systems):
        # a checkpoint without a test MAE (or a time) has no place on the plot
        shown = [h for h in head if h["system"] == system and h["force_mae_meV_A"] > 0
                 and math.isfinite(h["median_ttf_ps"]) and h["median_ttf_ps"] > 0]
        for h in shown:
            c = colour[h["model"]]
            ax.scatter(h["force_mae_meV_A"], h["median_ttf_ps"],
                       marker=markers.get(h["head"], "x"), s=70 if h["budget"] == "long" else 28,
                       facecolors="none" if h["ttf_censored"] else c, edgecolors=c,
                       linewidths=1.4, alpha=0.9)
        if shown:
            ax.set_xscale("log")
            ax.set_yscale("log")
            xs = [h["force_mae_meV_A"] for h in shown]
            # plain ticks: a range under one decade gets none (or crowded ones) by default
            ax.set_xticks([t for t in (10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000)
                           if min(xs) / 1.1 <= t <= max(xs) * 1.1])
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("test force MAE (meV/Å)")
        ax.set_ylabel("median time to failure (ps)")
        ax.set_title(f"{system} ({len(shown)} checkpoints)")
    handles = [Line2D([], [], marker="o", linestyle="", color=colour[m], label=m) for m in models]
    handles += [Line2D([], [], marker=mk, linestyle="", color="grey", label=f"{hd} head")
                for hd, mk in markers.items()]
    handles += [Line2D([], [], marker="o", linestyle="", markerfacecolor="none",
                       markeredgecolor="grey", label="open: censored (≥)"),
                Line2D([], [], marker="o", linestyle="", color="grey", markersize=9,
                       label="large: long budget")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_report(cfg: dict, out: Path, checkpoints, data_dir: Path, workers: int = 1) -> Path:
    """``OUT/report/``: failure.csv (every run), headline.csv, report.md, the plot."""
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    return write_tables(cfg, folder, run_rows(cfg, out, checkpoints, data_dir, workers))


def _merge_note(rows: List[dict], conflicts) -> str:
    calls = sorted({str(r.get("call", "")) for r in rows})
    count = ", ".join(f"{sum(str(r.get('call', '')) == c for r in rows)} from call {c}"
                      for c in calls)
    return (f"Runs of calls {' and '.join(calls)} merged ({count}; column `call` of "
            "`failure.csv`, `calls` here): a later call's run of a seed replaces the earlier "
            "one's only if it simulated further and the earlier run had not failed "
            "(`merge.py`)" + (f"; on {conflicts} seeds the two calls disagree (one failed "
                               "within the other's survival; the earlier call's run kept)"
                               if conflicts is not None else "") + ".")


def rows_from_csv(path: Path) -> List[dict]:
    """The rows of a ``failure.csv`` with their types (to redo a report from it alone)."""
    rows = []
    with open(path) as fh:
        for r in csv.DictReader(fh):
            for key in ("failed", "stopped"):
                r[key] = r[key] == "True"
            for key in ("ttf_ps", "length_ps", "rdf_failure_ps", "drift_meV_atom_ps",
                        "force_mae_meV_A", "direct_force_mae_meV_A"):
                r[key] = _float(r[key])
            r["seed"] = int(r["seed"])
            rows.append(r)
    return rows


def write_tables(cfg: dict, folder: Path, rows: List[dict], conflicts=None) -> Path:
    """failure.csv, headline.csv, failure_vs_mae.png and report.md of ``rows`` in ``folder``
    (``conflicts``: of merged calls, the seeds on which they disagree, ``merge.py``)."""
    from scipy.stats import spearmanr

    head = headline(rows)
    _write_csv(folder / "failure.csv", rows)
    _write_csv(folder / "headline.csv", head)
    if head:
        try:  # the tables matter more than the picture: a failed plot must not lose them
            _plot(head, folder / "failure_vs_mae.png")
        except Exception as exc:  # noqa: BLE001
            print(f"report: failure_vs_mae.png not drawn ({type(exc).__name__}: {exc})")
    calls = any("calls" in h for h in head)
    lines = [f"# {cfg['name']}: time to failure against force MAE", "",
             f"Seeds {cfg['seeds']}, device {cfg['device']}, {cfg['dtype']}. Generated by "
             "`benchmarks/stability_failure/run.py`; every run in `failure.csv`.", "",
             *([_merge_note(rows, conflicts), ""] if calls else []),
             "| system | budget | model | head | force MAE (meV/Å) | NVT runs | failed | "
             "stopped by deadline | median TTF (ps) | longest NVT (ps) | NVE failed | "
             "NVE drift (meV/atom/ps) | not started | reasons |" + (" calls |" if calls else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if calls
                                                                          else "")]
    for h in head:
        ttf = f"≥ {h['median_ttf_ps']:.3g}" if h["ttf_censored"] else f"{h['median_ttf_ps']:.3g}"
        lines.append(f"| {h['system']} | {h['budget']} | {h['model']} | {h['head']} | "
                     f"{h['force_mae_meV_A']:.1f} | {h['runs']} | {h['failed']} | "
                     f"{h['nvt_stopped']} | {ttf} | {h['nvt_max_ps']:.3g} | "
                     f"{h['nve_failed']}/{h['nve_runs']} | {h['nve_drift_meV_atom_ps']:.3g} | "
                     f"{h['not_started']} | {h['reasons']} |" +
                     (f" {h.get('calls', '')} |" if calls else ""))
    lines.append("")
    for system in sorted({h["system"] for h in head}):
        mine = [h for h in head if h["system"] == system and h["runs"]
                and math.isfinite(h["force_mae_meV_A"])]
        if len(mine) >= 3:
            rho = spearmanr([h["force_mae_meV_A"] for h in mine],
                            [h["median_ttf_ps"] for h in mine]).statistic
            lines.append(f"- {system}: Spearman rank correlation of force MAE and median time "
                         f"to failure over {len(mine)} checkpoints: {rho:.2f}")
        else:
            lines.append(f"- {system}: fewer than 3 checkpoints, no rank correlation")
    if head:
        lines += ["", *headline_markdown(rows, head),
                  "![time to failure against force MAE](failure_vs_mae.png)"]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    return folder / "report.md"

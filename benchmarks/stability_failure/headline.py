"""The issue's four questions answered from the failure study's rows, as Markdown for
``report.md`` (``report.write_report`` appends it).

* force MAE against time to failure: Spearman rank correlation of test force MAE and median
  time to failure (TTF) per system, over all checkpoints and within each budget;
* heads (direct heads and failure; does multiple time stepping keep the conservative model's
  stability): for the models trained with all three heads, per system and budget, NVT runs
  failed, failures per simulated ns (failed runs / simulated time: fair to censored runs of
  unequal length), median TTF, and the NVE leg's median |drift|;
* families: the conservative models of each system and budget, first to fail first.

A median TTF printed "≥" is censored (half or more of the seeds survived their run).
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

HEADS = ("conservative", "direct", "both")


def _ttf(h: dict) -> str:
    if not math.isfinite(h["median_ttf_ps"]):
        return "–"
    return ("≥ " if h["ttf_censored"] else "") + f"{h['median_ttf_ps']:.3g}"


def _spearman(xs, ys) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic) if len(xs) >= 3 else float("nan")


def failure_rate(rows: List[dict], h: dict) -> float:
    """Failed NVT runs per simulated ns of one checkpoint (``h``: a headline row)."""
    s = head_stats(rows, h["system"], h["budget"], h["head"], {h["model"]})
    return s["per_ns"]


def mae_lines(rows: List[dict], head: List[dict]) -> List[str]:
    lines = ["| system | budget | checkpoints | ρ(MAE, median TTF) | censored medians | "
             "ρ(MAE, failures per ns) |", "|---|---|---|---|---|---|"]
    for system in sorted({h["system"] for h in head}):
        mine = [h for h in head if h["system"] == system and h["runs"]
                and math.isfinite(h["force_mae_meV_A"])]
        for budget in ("all", "short", "long"):
            sel = [h for h in mine if budget == "all" or h["budget"] == budget]
            mae = [h["force_mae_meV_A"] for h in sel]
            rho_ttf = _spearman(mae, [h["median_ttf_ps"] for h in sel])
            rho_rate = _spearman(mae, [failure_rate(rows, h) for h in sel])
            lines.append(f"| {system} | {budget} | {len(sel)} | {rho_ttf:.2f} | "
                         f"{sum(h['ttf_censored'] for h in sel)} | {rho_rate:.2f} |")
    return lines


def head_stats(rows: List[dict], system: str, budget: str, head: str, models) -> dict:
    """Failed/total NVT runs, failures per simulated ns, median TTF and NVE median |drift|
    of ``head`` over ``models`` (one system and budget)."""
    from report import ran

    pick = [r for r in rows if r["system"] == system and r["budget"] == budget
            and r["head"] == head and r["model"] in models and ran(r)]
    nvt = [r for r in pick if r["ensemble"] == "nvt"]
    nve = [r for r in pick if r["ensemble"] == "nve"
           and math.isfinite(float(r["drift_meV_atom_ps"]))]
    failed = sum(bool(r["failed"]) for r in nvt)
    ps = sum(float(r["ttf_ps"]) for r in nvt)  # simulated until failure or the end
    ttf = np.array([float(r["ttf_ps"]) for r in nvt])
    return {"runs": len(nvt), "failed": failed,
            "per_ns": failed / ps * 1000.0 if ps > 0 else float("nan"),
            "median_ttf": float(np.median(ttf)) if len(ttf) else float("nan"),
            "censored": failed * 2 <= len(nvt), "simulated_ps": ps,
            "drift": float(np.median([abs(float(r["drift_meV_atom_ps"])) for r in nve]))
            if nve else float("nan"), "nve": len(nve)}


def head_lines(rows: List[dict]) -> List[str]:
    models = sorted({r["model"] for r in rows if r["head"] == "both"}
                    & {r["model"] for r in rows if r["head"] == "direct"})
    lines = [f"Models with all three heads: {', '.join(models) or 'none'} (\"both\" runs "
             "multiple time stepping: direct inner steps, a conservative correction).", "",
             "| system | budget | head | NVT failed / runs | failures per ns | median TTF (ps) "
             "| simulated ps | NVE median \\|drift\\| (meV/atom/ps) |",
             "|---|---|---|---|---|---|---|---|"]
    for system in sorted({r["system"] for r in rows}):
        for budget in sorted({r["budget"] for r in rows if r["system"] == system}):
            for head in HEADS:
                s = head_stats(rows, system, budget, head, models)
                if not s["runs"]:
                    continue
                ttf = ("≥ " if s["censored"] else "") + f"{s['median_ttf']:.3g}"
                lines.append(f"| {system} | {budget} | {head} | {s['failed']} / {s['runs']} | "
                             f"{s['per_ns']:.3g} | {ttf} | {s['simulated_ps']:.4g} | "
                             f"{s['drift']:.3g} |")
    return lines


def family_lines(head: List[dict]) -> List[str]:
    lines = ["| system | budget | conservative models, first to fail first: median TTF ps "
             "(failed/runs, force MAE meV/Å) |", "|---|---|---|"]
    for system in sorted({h["system"] for h in head}):
        for budget in sorted({h["budget"] for h in head if h["system"] == system}):
            mine = [h for h in head if h["system"] == system and h["budget"] == budget
                    and h["head"] == "conservative" and h["runs"]]
            mine.sort(key=lambda h: (h["ttf_censored"], h["median_ttf_ps"]))
            order = "; ".join(f"{h['model']} {_ttf(h)} ({h['failed']}/{h['runs']}, "
                              f"{h['force_mae_meV_A']:.0f})" for h in mine)
            lines.append(f"| {system} | {budget} | {order} |")
    return lines


def headline_markdown(rows: List[dict], head: List[dict]) -> List[str]:
    """The four answers' tables (see the module docstring)."""
    return ["## Does force MAE predict time to failure?", "",
            "Spearman ρ over checkpoints of test force MAE against median TTF (negative: "
            "larger error, earlier failure) and against failures per simulated ns (positive: "
            "larger error, more failures). A censored median is the length the clock allowed, "
            "which ranks the models' speed, not their stability: where most medians are "
            "censored, read the failure rate.", "", *mae_lines(rows, head), "",
            "## Direct heads, multiple time stepping and failure", "", *head_lines(rows), "",
            "## Which families fail first?", "", *family_lines(head), ""]

"""One markdown table of geoff's rows and its peers' rows, with the geoff/peer speed ratio.

A *series* is a list of rows for one (model, structure, dtype): each row a dict with
``atoms``, ``edges``, ``model_s``, ``calc_s`` (seconds, medians), ``mem_bytes``, or a
``failed`` reason (out of memory, deadline, import error, "GPU only"...). Keys:
geoff series ``(family, kind, dtype, chunk[, kernels])``; peer series ``(label, family, kind,
dtype)``. A peer row's ratio is against geoff's fastest row of the same size in its group
(over edge chunks and kernels): what a user of geoff would run.
"""
from __future__ import annotations

import math

import numpy as np

HEADER = ("| family | model | structure | dtype | atoms | edges | model ms | calc ms | calc/model "
          "| atoms/s (model) | mem/atom KB | exponent | largest that ran | geoff/peer atoms/s |")


def _largest(rows: list) -> str:
    ok = [r for r in rows if "model_s" in r]
    fail = next((r for r in rows if "failed" in r), None)
    note = str(ok[-1]["atoms"]) if ok else "none"
    return note + (f" ({fail['atoms']}: {fail['failed']})" if fail else "")


def _cells(r: dict) -> str:
    calc = r.get("calc_s", float("nan"))
    mem = r.get("mem_bytes", float("nan"))
    return (f"{r['atoms']} | {r['edges']} | {1e3 * r['model_s']:.2f} | {1e3 * calc:.2f} | "
            f"{calc / r['model_s']:.2f} | {r['atoms'] / r['model_s']:.3g} | "
            f"{mem / r['atoms'] / 1e3:.1f}")


def exponent(rows: list) -> float:
    """Slope of log(model time) against log(N) over the sizes >= 256 that ran."""
    pts = [(r["atoms"], r["model_s"]) for r in rows if "model_s" in r and r["atoms"] >= 256]
    if len(pts) < 2:
        return float("nan")
    n, t = np.log(np.array(pts, dtype=float)).T
    return float(np.polyfit(n, t, 1)[0])


def ratio(geoff_row, peer_row) -> float:
    """geoff's atoms/s over the peer's at the same size (> 1: geoff is faster); nan when
    either did not run or the sizes differ."""
    if not geoff_row or "model_s" not in geoff_row or "model_s" not in peer_row:
        return float("nan")
    if geoff_row["atoms"] != peer_row["atoms"]:
        return float("nan")
    return peer_row["model_s"] / geoff_row["model_s"]


def combined_table(geoff: dict, peers: dict) -> str:
    """geoff's series, each followed by its peers' series for the same family, structure
    and dtype; a peer row carries the ratio to geoff's row of the same size."""
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    groups = {}
    for key, rows in geoff.items():
        family, kind, dtype, chunk = key[:4]
        kernels = key[4] if len(key) > 4 else "e3nn"
        label = f"geoff {family}" + ("" if kernels == "e3nn" else f"+{kernels}") + (
            "" if chunk is None else f" (edge chunk {chunk or 'plain'})")
        groups.setdefault((family, kind, dtype), []).append((label, rows, True))
    for (label, family, kind, dtype), rows in peers.items():
        groups.setdefault((family, kind, dtype), []).append((label, rows, False))
    for (family, kind, dtype), series in groups.items():
        # the ratio is against geoff at its fastest at that size (over chunks and kernels)
        by_size = {}
        for _, rows, is_geoff in series:
            for r in rows if is_geoff else []:
                best = by_size.get(r["atoms"])
                if "model_s" in r and (best is None or r["model_s"] < best["model_s"]):
                    by_size[r["atoms"]] = r
        for label, rows, is_geoff in series:
            lead = f"| {family} | {label} | {kind} | {dtype} | "
            largest = f"{exponent(rows):.2f} | {_largest(rows)}"
            ok = [r for r in rows if "model_s" in r]
            if not ok:  # not even the first size ran: say why
                fail = next((r for r in rows if "failed" in r), {"atoms": "", "failed": "?"})
                lines.append(lead + f"{fail['atoms']} | | | | | | | | {fail['failed']} | |")
            for r in ok:
                x = "" if is_geoff else _ratio_text(ratio(by_size.get(r["atoms"]), r))
                if "chunk" in r:  # edge_chunk="auto": the chunk it chose at this size
                    chosen = "default" if r["chunk"] is None else r["chunk"] or "plain"
                    lead = f"| {family} | {label[:-1]}: {chosen}) | {kind} | {dtype} | "
                lines.append(lead + f"{_cells(r)} | {largest} | {x} |")
    return "\n".join(lines)


def _ratio_text(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.2f}×"

"""Call 4 of the failure study continues call 3: which checkpoints to run again, and how the
two calls' runs become one table.

A run is one (system, budget, model, head, ensemble, seed): one row of ``failure.csv``.

* ``to_rerun``: a checkpoint runs again in call 4 when call 3 left one of its runs unfinished:
  a row missing, an ``error`` (no checkpoint), "not started" (``report.ran``: 0 steps), or an
  NVT run the clock stopped before a failure (censored, ``stopped``). A checkpoint whose runs
  all failed or all reached their length is final and does not run again.
* ``merge_rows``: a call-4 row replaces its call-3 row only when it simulated further
  (``length_ps`` larger) and the call-3 row was not a failure (a failure is an observation of
  that seed: a repeat that survives longer, on a non-deterministic GPU, does not undo it); a
  call-3 row that never ran is replaced by a call-4 row that ran. Rows of either call without
  a counterpart are kept. Every merged row says where it came from in its ``call`` column.
  ``conflicts`` counts the runs whose two calls disagree (call 4 failed before call 3's
  censored length, or survived past call 3's failure): the merge keeps call 3's row there.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import yaml

from report import _mae, _write_csv, ran, rows_from_csv, run_rows, write_tables

KEY = ("system", "budget", "model", "head", "ensemble", "seed")
Checkpoint = Tuple[str, str, str]  # (system, budget, "<model>-<head>")


def run_key(row: dict) -> tuple:
    return tuple(str(row[k]) for k in KEY)


def checkpoint_key(row: dict) -> Checkpoint:
    return (row["system"], row["budget"], f"{row['model']}-{row['head']}")


def unfinished(row: dict) -> bool:
    """Whether a run is worth running again: it did not run, or the clock stopped its NVT run
    before a failure."""
    if not ran(row):
        return True
    return row["ensemble"] == "nvt" and not row["failed"] and bool(row["stopped"])


def to_rerun(rows: List[dict], wanted: Iterable[Checkpoint], seeds: Iterable[int],
             ensembles=("nvt", "nve")) -> Set[Checkpoint]:
    """The checkpoints of ``wanted`` that call 3's ``rows`` left unfinished (see the module
    docstring): any of its ``ensembles`` x ``seeds`` runs missing or ``unfinished``."""
    by_key = {run_key(r): r for r in rows}
    out = set()
    for system, budget, label in wanted:
        model, head = label.rsplit("-", 1)
        for ensemble in ensembles:
            for seed in seeds:
                r = by_key.get((system, budget, model, head, ensemble, str(seed)))
                if r is None or unfinished(r):
                    out.add((system, budget, label))
    return out


def _replaces(old: dict, new: dict) -> bool:
    if not ran(old):
        return ran(new)
    if old["failed"]:
        return False
    return new["length_ps"] > old["length_ps"]


def _conflict(old: dict, new: dict) -> bool:
    """The two calls' runs of one seed disagree: one failed within the other's survival."""
    if not (ran(old) and ran(new)) or old["failed"] == new["failed"]:
        return False
    failed, survived = (old, new) if old["failed"] else (new, old)
    return failed["ttf_ps"] < survived["length_ps"]


def merge_rows(old: List[dict], new: List[dict], old_call: str = "3",
               new_call: str = "4") -> Tuple[List[dict], int]:
    """(merged rows, conflicts): call 3's ``old`` and call 4's ``new`` rows merged by the rule
    of the module docstring; each row gets ``call`` (``old_call`` or ``new_call``) unless it
    has one already (a merged table merged again keeps its marks)."""
    merged: Dict[tuple, dict] = {}
    for r in old:
        merged[run_key(r)] = {**r, "call": r.get("call") or old_call}
    conflicts = 0
    for r in new:
        key = run_key(r)
        r = {**r, "call": new_call}
        prev = merged.get(key)
        if prev is not None:
            conflicts += _conflict(prev, r)
        if prev is None or _replaces(prev, r):
            merged[key] = r
    return [merged[k] for k in sorted(merged, key=_sort_key)], conflicts


def _sort_key(key: tuple):
    *head, seed = key
    return (*head, int(seed) if seed.lstrip("-").isdigit() else seed)


def refresh_mae(rows: List[dict], lookup) -> None:
    """Fill the force MAEs a row lacks (NaN) from ``lookup(system, label, budget)`` ->
    (MAE, direct MAE) in meV/Å: a test measured after call 3 (e.g. in call 4) places its
    call-3 runs on the plot."""
    cache = {}
    for r in rows:
        if math.isfinite(r["force_mae_meV_A"]):
            continue
        key = checkpoint_key(r)
        if key not in cache:
            cache[key] = lookup(key[0], key[2], key[1])
        r["force_mae_meV_A"], r["direct_force_mae_meV_A"] = cache[key]


def rerun_studies(cfg: dict, studies: list, csv: Path) -> list:
    """The (config, folder, model name) items of ``studies`` whose checkpoint the earlier
    call's ``csv`` left unfinished (``merge.to_rerun``)."""
    keys = {}
    for item in studies:
        system = yaml.safe_load(Path(item[0]).read_text())["systems"][0]["name"]
        budget = item[1].name[len(system) + 1:]
        keys[(system, budget, item[2][: -len(budget) - 1])] = item
    again = to_rerun(rows_from_csv(csv), keys, cfg["seeds"])
    return [item for key, item in keys.items() if key in again]


def merged_report(cfg: dict, out: Path, checkpoints, data_dir: Path, earlier: Path,
                  calls=("3", "4"), workers: int = 1, rdf: bool = True) -> Path:
    """``OUT/report/``: this call's runs merged into the earlier call's ``failure.csv``
    (``merge.merge_rows``); this call's rows alone in ``failure_this_call.csv``. ``rdf``
    False: ``cfg`` lacks the RDF criterion (``run.py --no-rdf``), and ``report.md`` says so."""
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    new = run_rows(cfg, out, checkpoints, data_dir, workers)
    _write_csv(folder / "failure_this_call.csv", new)
    rows, conflicts = merge_rows(rows_from_csv(earlier), new, *calls)
    refresh_mae(rows, lambda system, label, budget: _mae(out, system, label, budget))
    print(f"report: {len(new)} runs of call {calls[1]} merged into "
          f"{earlier}: {len(rows)} runs, "
          f"{sum(r['call'] == calls[1] for r in rows)} from call {calls[1]}, "
          f"{conflicts} seeds on which the two calls disagree (call {calls[0]}'s kept)")
    path = write_tables(cfg, folder, rows, conflicts=conflicts)
    if not rdf:
        with open(path, "a") as fh:
            fh.write(f"\nThe RDF criterion was not applied to call {calls[1]}'s runs (`run.py "
                     "report --no-rdf`: its trajectories were not read); call "
                     f"{calls[0]}'s rows keep theirs.\n")
    return path

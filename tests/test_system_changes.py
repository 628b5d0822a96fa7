"""GeoffCalculator.check_state: ASE's compare_atoms answer, through a cheaper path."""
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import compare_atoms

from geoff.calculators.ase import system_changes


def edits():
    """(name, edit of an Atoms in place): every kind of change ASE tracks, and non-changes."""
    def move(a):
        a.positions[3] += [0.01, 0, 0]

    def below_tol(a):
        a.positions[3, 0] = np.nextafter(a.positions[3, 0], np.inf)  # < 1e-15 Å away

    def nan(a):
        a.positions[0, 1] = np.nan

    def cell(a):
        a.set_cell(a.cell * 1.001, scale_atoms=False)

    def pbc(a):
        a.pbc = [True, False, True]

    def numbers(a):
        a.numbers[2] = 40

    def charges(a):
        a.set_initial_charges(np.linspace(-1, 1, len(a)))

    def magmoms(a):
        a.set_initial_magnetic_moments(np.ones(len(a)))

    def momenta(a):  # not a system change for a calculator
        a.set_momenta(np.ones((len(a), 3)))

    def nothing(a):
        pass

    return [move, below_tol, nan, cell, pbc, numbers, charges, magmoms, momenta, nothing]


@pytest.mark.parametrize("edit", edits(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("ignored", [(), ("initial_charges", "pbc")])
def test_same_changes_as_ase(edit, ignored):
    old = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    old.set_initial_charges(np.zeros(len(old))) if edit.__name__ == "magmoms" else None
    new = old.copy()
    edit(new)
    want = compare_atoms(old, new, tol=1e-15, excluded_properties=set(ignored))
    got = system_changes(old, new, 1e-15, ignored)
    assert sorted(got) == sorted(want)
    assert sorted(system_changes(new, old, 1e-15, ignored)) == sorted(
        compare_atoms(new, old, tol=1e-15, excluded_properties=set(ignored)))


def test_no_previous_atoms_is_every_change():
    atoms = bulk("Cu")
    assert sorted(system_changes(None, atoms)) == sorted(compare_atoms(None, atoms))


def test_calculator_recomputes_only_on_a_change():
    from conftest import small_model
    from geoff.calculators.ase import GeoffCalculator

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    calc = GeoffCalculator(small_model("schnet"))
    atoms.calc = calc
    calls = []
    run = calc.calculate
    calc.calculate = lambda *a, **k: (calls.append(1), run(*a, **k))[1]
    e0 = atoms.get_potential_energy()
    atoms.get_forces()
    assert len(calls) == 1  # nothing changed: served from the results
    atoms.positions[0, 0] += 0.1
    assert atoms.get_potential_energy() != e0 and len(calls) == 2
    atoms.set_momenta(np.ones((len(atoms), 3)))
    atoms.get_forces()
    assert len(calls) == 2

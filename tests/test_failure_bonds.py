"""Fu et al.'s molecular failure criterion: a bond more than ``max_bond_deviation`` Å away
from its starting (equilibrium) length."""
import numpy as np
from ase.build import molecule

from geoff.md import FailureCriteria
from geoff.md.failure import FailureMonitor

CRIT = FailureCriteria(max_force=None, temperature_factor=None, min_distance_factor=None,
                       max_bond_deviation=0.5)


def _stretched(bond, by):
    """Ethanol with atom ``bond[1]`` moved ``by`` Å along the bond away from ``bond[0]``."""
    atoms = molecule("CH3CH2OH")
    i, j = bond
    u = atoms.positions[j] - atoms.positions[i]
    atoms.positions[j] += by * u / np.linalg.norm(u)
    return atoms


def test_bond_length_deviation_fails_past_the_limit():
    start = molecule("CH3CH2OH")
    monitor = FailureMonitor(start, CRIT)
    c_o = (1, 2)  # C-O bond of ase's ethanol (1.43 Å): not broken at +0.55 Å by the factors
    assert monitor.check(1, _stretched(c_o, 0.45)) is None
    failure = monitor.check(7, _stretched(c_o, 0.55))
    assert failure is not None and failure.reason == "bond_length" and failure.step == 7
    assert sorted(failure.details["bond"]) == [1, 2]
    assert abs(failure.details["distance"] - (np.linalg.norm(
        start.positions[2] - start.positions[1]) + 0.55)) < 1e-9
    # a compressed bond counts too
    assert monitor.check(2, _stretched(c_o, -0.55)).reason == "bond_length"


def test_bond_length_criterion_is_off_by_default():
    monitor = FailureMonitor(molecule("CH3CH2OH"),
                             FailureCriteria(max_force=None, temperature_factor=None,
                                             min_distance_factor=None))
    assert monitor.check(1, _stretched((1, 2), 0.55)) is None

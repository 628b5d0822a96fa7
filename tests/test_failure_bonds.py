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


def test_rdf_failure_time_finds_the_first_bad_window():
    """A liquid-like box whose frames turn into a compressed copy after 0.5 ps: the RDF
    error against the first frames' RDF crosses the threshold in the window ending at 0.6."""
    from ase.build import bulk

    from geoff.md.metrics import rdf
    from geoff.md.rdf_failure import rdf_failure_time, rdf_window_errors

    base = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    frames = []
    for k in range(12):
        a = base.copy()
        a.rattle(0.05, seed=k)
        if k >= 6:  # from 0.6 ps: a different structure (scaled by 0.8)
            a.set_cell(a.cell * 0.8, scale_atoms=True)
        a.info["time_ps"] = 0.1 * k
        frames.append(a)
    _, g_ref = rdf(frames[:5], 5.0, 50)
    errors = rdf_window_errors(frames, g_ref, 0.2, 5.0, 50)
    assert [round(t, 6) for t, _ in errors] == [0.2, 0.4, 0.6, 0.8, 1.0]  # 1.1 alone: too short
    assert errors[0][1] < 0.5 and errors[3][1] > 1.0
    assert abs(rdf_failure_time(frames, g_ref, 0.8, 0.2, 5.0, 50) - 0.6) < 1e-9
    assert rdf_failure_time(frames[:5], g_ref, 0.8, 0.2, 5.0, 50) is None

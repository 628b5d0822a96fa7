"""ART-style activation (geoff.data.art) on the Müller-Brown surface, whose saddles are known."""
import numpy as np
import pytest

from geoff.data.art import activate, fire_relax, hessian_product, lanczos_lowest

# Müller-Brown (Theor. Chim. Acta 53, 75 (1979)), lengths x2 (Å) and energies /100 (eV), so
# that curvatures are those of an atom in a solid (~10 eV/Å²); z is a harmonic spectator.
# Its minima and saddles (energies in MB units): A -146.70, B -108.17, C -80.77;
# S1 -40.665 (between A and C), S2 -72.249 (between B and C).
AMP = np.array([-200.0, -100.0, -170.0, 15.0])
A, B, C = (np.array([-1.0, -1.0, -6.5, 0.7]), np.array([0.0, 0.0, 11.0, 0.6]),
           np.array([-10.0, -10.0, -6.5, 0.7]))
X0, Y0 = np.array([1.0, 0.0, -0.5, -1.0]), np.array([0.0, 0.5, 1.5, 1.0])
LENGTH, ENERGY = 2.0, 0.01
S1, S2 = -40.665 * ENERGY, -72.249 * ENERGY


def muller_brown(p):
    """(energy eV, forces (3,) eV/Å) for one atom at p (3,) Å."""
    dx, dy = p[0] / LENGTH - X0, p[1] / LENGTH - Y0
    t = AMP * np.exp(A * dx * dx + B * dx * dy + C * dy * dy) * ENERGY
    grad = np.array([(t * (2 * A * dx + B * dy)).sum() / LENGTH,
                     (t * (B * dx + 2 * C * dy)).sum() / LENGTH, 4.0 * p[2]])
    return float(t.sum() + 2.0 * p[2] ** 2), -grad


def minimum(x, y):
    return fire_relax(muller_brown, np.array([x * LENGTH, y * LENGTH, 0.0]), 1e-6)


@pytest.mark.parametrize("start,saddles", [((0.623, 0.028), [S2]), ((-0.558, 1.442), [S1]),
                                           ((-0.050, 0.467), [S1, S2])])
def test_activation_finds_the_known_saddles(start, saddles):
    x0, e0 = minimum(*start)
    found = []
    for seed in range(6):
        event = activate(muller_brown, x0, e0, [0], np.random.default_rng(seed))
        assert event.status in ("accepted", "not_converged", "no_negative_curvature"), event
        if event.status == "accepted":
            saddle = e0 + event.barrier
            # max force 0.05 eV/Å at curvature ~2 eV/Å² leaves < 1e-3 eV of energy error
            assert min(abs(saddle - s) for s in saddles) < 2e-3, (saddle, saddles)
            assert event.curvature < -0.05 < event.second_curvature
            assert event.final_displacement > 0.1 and event.final_energy_change != 0
            assert 0 < event.force_calls < 500
            found.append(saddle)
    assert len(found) >= 3  # most directions lead to a saddle


def test_lanczos_finds_the_lowest_eigenpair():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(30, 30))
    h = m + m.T
    value, vector = lanczos_lowest(lambda v: h @ v, rng.normal(size=30), iters=30, tol=1e-10)
    exact = np.linalg.eigh(h)
    assert value == pytest.approx(exact[0][0], abs=1e-8)
    assert abs(vector @ exact[1][:, 0]) == pytest.approx(1.0, abs=1e-6)


def test_hessian_product_and_deflation_on_the_saddle_curvature():
    """At the minimum B the finite-difference H v matches the analytic Hessian; deflating the
    lowest mode leaves the next one."""
    x0, _ = minimum(0.623, 0.028)
    step = 1e-5
    h = np.array([-(muller_brown(x0 + step * e)[1] - muller_brown(x0 - step * e)[1]) / (2 * step)
                  for e in np.eye(3)])
    vals, vecs = np.linalg.eigh(0.5 * (h + h.T))
    hv = hessian_product(muller_brown, x0, muller_brown(x0)[1], 1e-4)
    assert np.allclose(hv(vecs[:, 1]), vals[1] * vecs[:, 1], atol=1e-2)
    deflated = hessian_product(muller_brown, x0, muller_brown(x0)[1], 1e-4, project=vecs[:, 0])
    start = np.array([0.3, 0.4, 0.5])
    start -= (start @ vecs[:, 0]) * vecs[:, 0]  # the Krylov space then stays orthogonal to it
    value, _ = lanczos_lowest(deflated, start, iters=3, tol=1e-12)
    assert value == pytest.approx(vals[1], rel=1e-2)


def test_masked_hessian_product_is_the_local_block():
    """With a mask, H v is the Hessian block of the masked coordinates (here x, y)."""
    x0, _ = minimum(-0.558, 1.442)
    step = 1e-5
    h = np.array([-(muller_brown(x0 + step * e)[1] - muller_brown(x0 - step * e)[1]) / (2 * step)
                  for e in np.eye(3)])
    mask = np.array([1.0, 1.0, 0.0])
    hv = hessian_product(muller_brown, x0, muller_brown(x0)[1], 1e-5, mask=mask)
    v = np.array([0.6, 0.8, 0.5])
    assert np.allclose(hv(v), mask * (h @ (mask * v)), atol=1e-3)

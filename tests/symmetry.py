"""Helpers for symmetry and derivative checks, shared by the model tests and benchmarks."""
import numpy as np
import torch

from geoff.graph import atoms_to_graph


def random_orthogonal(rng, reflect=False):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ np.diag([1.0, 1.0, -1.0])
    return q


def transformed(atoms, rot=None, shift=None, perm=None):
    """Apply x -> x R^T + shift (cell rotated too) and an atom permutation."""
    out = atoms.copy()
    if rot is not None:
        out.positions = out.positions @ rot.T
        if out.cell.rank > 0:
            out.set_cell(out.cell.array @ rot.T, scale_atoms=False)
    if shift is not None:
        out.positions = out.positions + shift
    if perm is not None:
        out = out[perm]
    return out


def evaluate(model, atoms, stress=False):
    out = model(atoms_to_graph(atoms, model), compute_forces=True, compute_stress=stress)
    return {k: v.detach().numpy() for k, v in out.items()}


def energy(model, atoms):
    g = atoms_to_graph(atoms, model)
    return float(model(g, compute_forces=False)["energy"].detach().sum())


def fd_force_error(model, atoms, h=1e-5, n_dirs=3, seed=0):
    """Max error of -F.d against central differences of E along random unit vectors d,
    relative to |F| (the largest |F.d| can be): a seed that happens to give a tiny F.d must
    not turn rounding noise of E into a large relative error."""
    rng = np.random.default_rng(seed)
    forces = evaluate(model, atoms)["forces"]
    worst = 0.0
    for _ in range(n_dirs):
        d = rng.normal(size=forces.shape)
        d /= np.linalg.norm(d)
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions += h * d
        minus.positions -= h * d
        fd = (energy(model, plus) - energy(model, minus)) / (2 * h)
        analytic = -(forces * d).sum()
        worst = max(worst, abs(fd - analytic) / max(np.linalg.norm(forces), 1e-12))
    return worst


def fd_stress_error(model, atoms, h=1e-5):
    """Max relative error of the stress against central differences of E under strain."""
    stress = evaluate(model, atoms, stress=True)["stress"][0]
    volume = atoms.get_volume()
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h if a != b else h
            vals = []
            for sign in (1, -1):
                s = atoms.copy()
                s.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
                vals.append(energy(model, s))
            # d/d(eps_ab) with eps symmetric: off-diagonals move two entries at once.
            deriv = (vals[0] - vals[1]) / (2 * h)
            fd[a, b] = fd[b, a] = deriv / volume / (1 if a == b else 2)
    scale = max(np.abs(stress).max(), 1e-12)
    return np.abs(fd - stress).max() / scale


def assert_float32_close_to_float64(model, atoms):
    """The float32 copy of a float64 ``model`` gives float32 outputs close to float64 ones."""
    ref = evaluate(model, atoms)
    model32 = model.float()
    out = model32(atoms_to_graph(atoms, model32, dtype=torch.float32))
    assert out["energy"].dtype == torch.float32
    np.testing.assert_allclose(out["energy"].detach().numpy(), ref["energy"], rtol=1e-5)
    np.testing.assert_allclose(out["forces"].detach().numpy(), ref["forces"], atol=1e-4)


def assert_batch_matches_single(model, graphs):
    """Energies, forces and stresses of a batch equal those of each graph on its own."""
    from geoff.graph import batch_graphs

    batched = model(batch_graphs(graphs), compute_stress=True)
    offset = 0
    for k, g in enumerate(graphs):
        single = model(g, compute_stress=True)
        n = g["positions"].shape[0]
        torch.testing.assert_close(batched["energy"][k], single["energy"][0])
        torch.testing.assert_close(batched["forces"][offset:offset + n], single["forces"])
        torch.testing.assert_close(batched["stress"][k], single["stress"][0])
        offset += n

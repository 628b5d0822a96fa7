"""Physics every registered model must get right (float64), parametrised over the registry."""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from conftest import VARIANTS, cluster, rattled_triclinic, small_model
from geoff.graph import atoms_to_graph
from geoff.potentials import available_models, build_model
from symmetry import (assert_batch_matches_single,
                      assert_float32_close_to_float64, evaluate, fd_force_error, fd_stress_error,
                      random_orthogonal, transformed)

# Registered models plus the variants of conftest.VARIANTS (GemNet-Q), which run as models of
# their own: FD forces, invariance and TorchScript in `make test`, the rest marked slow.
MODELS = available_models() + list(VARIANTS)
SLOW_VARIANTS = [pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS]
MODELS_VARIANTS_SLOW = available_models() + SLOW_VARIANTS
# Models whose symmetry is only approximate (sampled transforms, one stochastic frame):
# their measured bounds are asserted in tests/test_frames.py instead. symgnn averages over a
# fixed set of K sampled O(3) transforms at inference (error ~ 1/sqrt(K)); faenet's registry
# default (frames="local", all sign choices of per-atom PCA frames) is exact.
APPROXIMATE = {"symgnn"}
# Models that see the whole structure at once (global PCA frames): not local, so the 2x2x2
# extensivity identity does not hold for them (the frame of the supercell differs).
# Empty: faenet defaults to per-atom local frames (frames="global"/"stochastic" would belong
# here; their non-locality is tested in tests/test_frames.py) and symgnn uses the same K
# transforms for every atom, so both are local.
GLOBAL = set()
EXACT = [m for m in MODELS if m not in APPROXIMATE]
LOCAL = [m for m in available_models() if m not in GLOBAL] + SLOW_VARIANTS


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("force_head", ["conservative", "both"])
def test_forces_are_minus_energy_gradient(name, force_head):
    model = small_model(name, force_head=force_head)
    assert fd_force_error(model, rattled_triclinic()) < 1e-6
    assert fd_force_error(model, cluster()) < 1e-6


@pytest.mark.parametrize("name", MODELS_VARIANTS_SLOW)
def test_stress_is_strain_derivative(name):
    model = small_model(name)
    assert fd_stress_error(model, rattled_triclinic()) < 1e-6


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("periodic", [True, False])
def test_invariance_and_equivariance(name, reflect, periodic):
    model = small_model(name, force_head="both")
    rng = np.random.default_rng(1)
    atoms = rattled_triclinic() if periodic else cluster()
    ref = evaluate(model, atoms)
    rot = random_orthogonal(rng, reflect=reflect)
    perm = rng.permutation(len(atoms))
    moved = transformed(atoms, rot=rot, shift=rng.normal(size=3) * 3.0, perm=perm)
    out = evaluate(model, moved)
    tol = 1e-9 if name in ("dimenet", "faenet") else 1e-10
    assert abs(out["energy"][0] - ref["energy"][0]) <= tol * abs(ref["energy"][0])
    for key in ("forces", "direct_forces"):
        expected = ref[key][perm] @ rot.T
        err = np.abs(out[key] - expected).max() / np.abs(expected).max()
        assert err < tol, key
    np.testing.assert_allclose(out["energies"], ref["energies"][perm], rtol=tol, atol=tol)


@pytest.mark.parametrize("name", LOCAL)
def test_small_cell_extensivity(name):
    """A periodic cell smaller than the cutoff: E(2x2x2 supercell) = 8 E(cell)."""
    model = small_model(name, cutoff=4.0)
    rng = np.random.default_rng(2)
    atoms = Atoms("CuZr", positions=[[0, 0, 0], [1.3, 1.4, 1.2]],
                  cell=[[2.6, 0.1, 0], [0.2, 2.7, 0], [0.3, -0.2, 2.65]], pbc=True)
    atoms.positions += rng.normal(scale=0.05, size=(2, 3))
    assert np.min(atoms.cell.lengths()) < model.cutoff
    small = evaluate(model, atoms, stress=True)
    big = evaluate(model, atoms * (2, 2, 2), stress=True)
    assert abs(big["energy"][0] - 8 * small["energy"][0]) < 1e-9 * abs(8 * small["energy"][0])
    np.testing.assert_allclose(big["forces"], np.tile(small["forces"], (8, 1)), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(big["stress"], small["stress"], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", LOCAL)
def test_dimer_goes_smoothly_to_zero_at_cutoff(name):
    model = small_model(name, cutoff=4.0)

    def dimer(r):
        out = evaluate(model, Atoms("CuZr", positions=[[0, 0, 0], [r, 0, 0]]))
        return out["energy"][0], out["forces"][1, 0]

    e_far, f_far = dimer(10.0)
    assert f_far == 0.0
    gaps = [1e-1, 1e-2, 1e-3]
    de = [abs(dimer(4.0 - d)[0] - e_far) for d in gaps]
    df = [abs(dimer(4.0 - d)[1]) for d in gaps]
    # Envelope with p = 6 vanishes like (1 - r/c)^3: at least two orders per decade near c.
    assert de[2] < 1e-3 * max(de[0], 1e-12) + 1e-12
    assert df[2] < 1e-2 * max(df[0], 1e-12) + 1e-12
    e_out, f_out = dimer(4.0 + 1e-6)
    assert e_out == pytest.approx(e_far, abs=1e-14) and f_out == 0.0


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("force_head", ["conservative", "direct", "both"])
def test_torchscript_matches_eager(name, force_head):
    model = small_model(name, force_head=force_head)
    scripted = torch.jit.script(model)
    graph = atoms_to_graph(rattled_triclinic(), model)
    eager = model(graph, compute_forces=True, compute_stress=True)
    jit = scripted(graph, True, True)
    assert set(eager) == set(jit)
    for key in eager:
        torch.testing.assert_close(jit[key], eager[key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", MODELS_VARIANTS_SLOW)
def test_float32_runs_and_agrees_with_float64(name):
    assert_float32_close_to_float64(small_model(name), rattled_triclinic())


def test_batched_equals_separate():

    model = small_model("schnet")
    structures = [rattled_triclinic(0), cluster(1), rattled_triclinic(3, n=(1, 2, 2))]
    graphs = [atoms_to_graph(a, model) for a in structures]
    assert_batch_matches_single(model, graphs)


def test_n_local_excludes_ghost_energies():
    model = small_model("schnet")
    graph = atoms_to_graph(rattled_triclinic(), model)
    full = model(graph)
    graph["n_local"] = torch.tensor([5])
    part = model(graph)
    torch.testing.assert_close(part["energy"][0], full["energies"][:5].sum())


def test_build_model_errors():
    from geoff.potentials import build_model

    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", species=["Cu"])
    with pytest.raises(ValueError, match="force_head"):
        build_model("schnet", species=["Cu"], force_head="sideways")
    with pytest.raises(ValueError, match="bad hyper-parameters"):
        build_model("schnet", species=["Cu"], n_wheels=3)


def test_edge_direct_head_has_no_net_force():
    """The edge-based direct head is antisymmetric per pair: forces sum to zero."""
    model = small_model("schnet", force_head="direct")
    out = evaluate(model, rattled_triclinic())
    assert np.abs(out["forces"].sum(axis=0)).max() < 1e-12 * np.abs(out["forces"]).max() * len(out["forces"])


def _fit_dense_metal_forces(name: str, steps: int = 40) -> float:
    """Force MAE after / before ``steps`` Adam steps on two rattled 32-atom EMT Cu cells at a
    6 Å cutoff (~76 neighbours per atom, the density where models that fed distance only
    additively into their messages stayed at zero forces on Cu64Zr36)."""
    from ase.calculators.emt import EMT
    from geoff.graph import batch_graphs

    frames = []
    for seed in range(2):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        atoms.rattle(0.15, seed=seed)
        atoms.calc = EMT()
        frames.append(atoms)
    forces = torch.tensor(np.concatenate([a.get_forces() for a in frames]))
    energy = torch.tensor([a.get_potential_energy() for a in frames])
    torch.manual_seed(0)
    model = build_model(name, ["Cu"], 6.0, n_features=32).double()
    model.set_normalisation([float(energy.mean()) / len(frames[0])], float(forces.pow(2).mean().sqrt()))
    graph = batch_graphs([atoms_to_graph(a, model) for a in frames])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    errors = []
    for _ in range(steps + 1):
        out = model(graph)
        errors.append(float((out["forces"] - forces).detach().abs().mean()))
        loss = (out["forces"] - forces).pow(2).mean() + ((out["energy"] - energy) / 32).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return errors[-1] / errors[0]


# The models whose messages are MLPs of concatenated features, where distance can drown
# (EGNN, FAENet and SymGNN stayed at zero forces on Cu64Zr36 before their radial filter).
# Measured ratios: egnn 0.14, faenet 0.14 (schnet 0.17, painn 0.12 for comparison).
@pytest.mark.parametrize("name", ["egnn", pytest.param("faenet", marks=pytest.mark.slow),
                                  pytest.param("symgnn", marks=pytest.mark.slow)])
def test_learns_forces_of_a_dense_metal(name):
    """40 Adam steps on two structures cut the force error of a dense metal to < 30 %
    (EGNN without its radial filter: 46 %)."""
    assert _fit_dense_metal_forces(name) < 0.3

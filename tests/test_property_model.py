"""Per-atom property heads: invariance, save/load, TorchScript, the ASE calculator, edge masks."""
import numpy as np
import pytest
import torch

from conftest import cluster, rattled_triclinic, small_model
from symmetry import evaluate, random_orthogonal, transformed

pytestmark = pytest.mark.usefixtures("one_thread")

PROP = "barrier_mean"


def property_model(name, **extra):
    model = small_model(name, properties=[PROP], **extra)
    model.property_heads[PROP].set_normalisation([0.5, 0.9], [0.2, 0.4])
    return model


@pytest.mark.parametrize("name", ["schnet", "painn", "nequip", "faenet"])
def test_property_invariant_under_rotation_reflection_permutation(name):
    model = property_model(name)
    atoms = rattled_triclinic(seed=1)
    ref = evaluate(model, atoms)[PROP]
    assert ref.shape == (len(atoms),)
    assert np.ptp(ref) > 1e-6  # not a constant: the head sees the environment
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(atoms))
    moved = transformed(atoms, rot=random_orthogonal(rng, reflect=True), shift=rng.normal(size=3),
                        perm=perm)
    np.testing.assert_allclose(evaluate(model, moved)[PROP], ref[perm], atol=1e-9)


def test_symgnn_property_close_to_invariant():
    """SymGNN's average over K sampled transforms is only approximately invariant."""
    model = property_model("symgnn", n_samples=32)
    atoms = cluster(seed=2)
    ref = evaluate(model, atoms)[PROP]
    rng = np.random.default_rng(4)
    moved = transformed(atoms, rot=random_orthogonal(rng, reflect=True))
    err = np.abs(evaluate(model, moved)[PROP] - ref).max()
    assert err < 0.05 * np.abs(ref).max()


def test_property_names_are_checked():
    with pytest.raises(ValueError, match="cannot be a property name"):
        small_model("schnet", properties=["forces"])
    with pytest.raises(ValueError, match="distinct"):
        small_model("schnet", properties=["a", "a"])


def test_energy_model_config_unchanged_without_properties():
    model = small_model("schnet")
    assert "properties" not in model.config and len(model.property_heads) == 0


def test_save_load_and_script_keep_the_property(tmp_path):
    import geoff

    model = property_model("painn")
    atoms = rattled_triclinic(seed=5)
    ref = evaluate(model, atoms)[PROP]
    geoff.save(model, tmp_path / "p.ckpt")
    loaded = geoff.load(tmp_path / "p.ckpt")
    assert loaded.properties == [PROP]
    np.testing.assert_allclose(evaluate(loaded, atoms)[PROP], ref, atol=1e-12)
    scripted = torch.jit.script(loaded)
    np.testing.assert_allclose(evaluate(scripted, atoms)[PROP], ref, atol=1e-12)


def test_calculator_returns_the_property():
    from geoff.calculators.ase import GeoffCalculator

    model = property_model("schnet")
    atoms = rattled_triclinic(seed=6)
    atoms.calc = GeoffCalculator(model)
    atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.calc.results[PROP], evaluate(model, atoms)[PROP],
                               atol=1e-12)


@pytest.mark.parametrize("name, extra", [
    ("schnet", {}), ("painn", {}), ("egnn", {}), ("nequip", {}), ("mace", {}), ("symgnn", {}),
    # FAENet's local PCA frames still see a masked neighbour: exact with global frames only.
    ("faenet", {"frames": "global"})])
def test_zero_edge_mask_equals_removing_the_edges(name, extra):
    """A mask of 0 on a set of edges (both directions) gives the model without those edges."""
    from geoff.graph import atoms_to_graph

    model = small_model(name, properties=[PROP], **extra)
    atoms = cluster(seed=7)
    g = atoms_to_graph(atoms, model)
    ei = g["edge_index"]
    rng = np.random.default_rng(0)
    pairs = {tuple(sorted(p)) for p in ei.T.tolist()}
    dropped = set(list(pairs)[k] for k in rng.choice(len(pairs), 5, replace=False))
    drop = torch.tensor([tuple(sorted(p)) in dropped for p in ei.T.tolist()])
    masked = dict(g, edge_mask=(~drop).to(torch.float64))
    removed = dict(g, edge_index=ei[:, ~drop], shifts=g["shifts"][~drop])
    out_mask = model(masked, compute_forces=False)
    out_removed = model(removed, compute_forces=False)
    for key in ("energy", PROP):
        np.testing.assert_allclose(out_mask[key].detach().numpy(),
                                   out_removed[key].detach().numpy(), atol=1e-10)
    full = model(g, compute_forces=False)[PROP]
    assert (full - out_mask[PROP]).abs().max() > 1e-6  # the edges mattered

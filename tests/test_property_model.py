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


@pytest.mark.parametrize("name", ["schnet", "dimenet", "painn", "egnn", "nequip", "mace",
                                  "faenet", "gemnet"])
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


def _target_frames(n=12, seed=0):
    """Rattled Cu/Zr cells; target = a smooth sum over neighbours of exp(-4 (r - 2.4)^2), plus
    2 for Zr (a per-element offset), NaN on a third of the atoms."""
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = rattled_triclinic(seed=100 + k)
        atoms.positions += rng.normal(scale=0.15, size=atoms.positions.shape)
        i, d = neighbor_list("id", atoms, 3.5)
        value = np.bincount(i, weights=np.exp(-4 * (d - 2.4) ** 2), minlength=len(atoms))
        value += 2.0 * (atoms.numbers == 40)
        value[rng.random(len(atoms)) < 0.33] = np.nan
        atoms.new_array("coord", value)
        frames.append(atoms)
    return frames


def test_trainer_learns_a_per_atom_target_split_by_structure(tmp_path):
    import json

    from geoff.data.io import write_dataset
    from geoff.training import read_split, train

    frames = _target_frames()
    write_dataset(frames, tmp_path / "t.extxyz")
    cfg = dict(model="schnet", hparams=dict(n_features=16, n_layers=2, n_rbf=8), cutoff=3.5,
               batch_size=2, val_fraction=0.2, test_fraction=0.2, warmup_steps=0, lr=1e-2,
               progress=False, num_threads=1, seed=0, epochs=30, target="coord",
               energy_weight=0.0, forces_weight=0.0, data=str(tmp_path / "t.extxyz"),
               out=str(tmp_path / "run"))
    result = train(cfg)
    history = result["history"]
    assert history[-1]["val_target_mae_unit"] < 0.6 * history[0]["val_target_mae_unit"]
    split = read_split(tmp_path / "run")
    assert not set(split["test"]) & set(split["train"])  # whole structures, never shared
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    # Better than the per-element mean of the training atoms (the model's starting point).
    def values(indices):
        v = np.concatenate([frames[k].arrays["coord"] for k in indices])
        z = np.concatenate([frames[k].numbers for k in indices])
        return v[np.isfinite(v)], z[np.isfinite(v)]

    v_train, z_train = values(split["train"])
    v_test, z_test = values(split["test"])
    baseline = np.mean(np.abs(v_test - np.where(z_test == 40, v_train[z_train == 40].mean(),
                                                v_train[z_train == 29].mean())))
    assert 0 < metrics["target_mae_unit"] < 0.8 * baseline
    import geoff

    model = geoff.load(tmp_path / "run" / "best.ckpt")
    assert model.properties == ["coord"]
    head = model.property_heads["coord"]
    assert torch.all(head.scale > 0) and float(head.shift[1] - head.shift[0]) > 1.0  # Zr +2

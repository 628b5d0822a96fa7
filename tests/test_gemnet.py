"""GemNet's own pieces: reverse edges, quadruplets, the dihedral basis, and what torsions add.

The physics every model must get right (forces, stress, symmetry, LAMMPS) is in
tests/test_models.py and tests/test_lammps.py, which run `gemnet` and the `gemnet-q` variant.
"""
import itertools

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import cluster, rattled_triclinic, small_model
from geoff.graph import atoms_to_graph
from geoff.potentials import build_model
from geoff.potentials.dimenet import build_triplets
from geoff.potentials.gemnet import build_quadruplets, dihedral_harmonics, reverse_edges


def edge_vectors(graph):
    i, j = graph["edge_index"]
    return graph["positions"][j] - graph["positions"][i] + graph["shifts"]


def test_reverse_edges_of_a_periodic_cell():
    """Every edge of a cell smaller than twice the cutoff (several images of one pair) finds
    the edge with swapped atoms and opposite vector; an edge left without it maps to E."""
    model = small_model("gemnet")
    graph = atoms_to_graph(rattled_triclinic(n=(1, 2, 2)), model)
    ei, vec = graph["edge_index"], edge_vectors(graph)
    n_edges = ei.shape[1]
    rev = reverse_edges(ei, graph["shifts"], graph["positions"].shape[0])
    assert (rev < n_edges).all()
    assert torch.equal(rev[rev], torch.arange(n_edges))
    torch.testing.assert_close(vec[rev], -vec)
    keep = torch.arange(n_edges) != 5  # drop edge 5: its reverse has none
    rev = reverse_edges(ei[:, keep], graph["shifts"][keep], graph["positions"].shape[0])
    assert int((rev == n_edges - 1).sum()) == 1


def brute_force_quadruplets(positions, q_cut):
    """Chains (c, a, b, d) of distinct-enough atoms with three bonds shorter than q_cut."""
    n = len(positions)
    dist = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    bonded = (dist < q_cut) & ~np.eye(n, dtype=bool)
    return {(c, a, b, d) for c, a, b, d in itertools.product(range(n), repeat=4)
            if bonded[c, a] and bonded[a, b] and bonded[b, d] and b != c and d != a and d != c}


def test_quadruplets_match_brute_force():
    atoms = cluster(n=12)
    model = small_model("gemnet")
    graph = atoms_to_graph(atoms, model)
    ei, shifts = graph["edge_index"], graph["shifts"]
    d = torch.linalg.norm(edge_vectors(graph), dim=-1)
    idx_ji, idx_kj = build_triplets(ei, shifts, len(atoms))
    q_outer, q_inner = build_quadruplets(idx_ji, idx_kj, ei, shifts, d < 3.0)
    e, f, g = idx_ji[q_outer], idx_kj[q_outer], idx_kj[q_inner]
    assert torch.equal(idx_ji[q_inner], f)  # the two triplets share the middle edge
    got = [(int(ei[0, e_]), int(ei[1, e_]), int(ei[1, f_]), int(ei[1, g_]))
           for e_, f_, g_ in zip(e, f, g)]
    expected = brute_force_quadruplets(atoms.positions, 3.0)
    assert len(got) == len(set(got)) == len(expected) > 100
    assert set(got) == expected


def test_dihedral_harmonics_are_sin_sin_cos_m_phi():
    rng = np.random.default_rng(0)
    c, a, b, d = rng.normal(size=(4, 3))
    u, axis, w = c - a, b - a, d - b  # a->c, a->b, b->d
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    cos_a = unit(u) @ unit(axis)
    cos_b = unit(-axis) @ unit(w)
    n1, n2 = np.cross(unit(axis), u), np.cross(unit(axis), w)
    phi = np.arctan2(unit(axis) @ np.cross(n1, n2), n1 @ n2)
    expected = [(np.sqrt(1 - cos_a**2) * np.sqrt(1 - cos_b**2)) ** m * np.cos(m * phi)
                for m in range(5)]
    got = dihedral_harmonics(torch.tensor([cos_a]), torch.tensor([cos_b]),
                             torch.tensor([unit(u) @ unit(w)]), 4)[0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    # c, a, b collinear: the dihedral is undefined and every m >= 1 term is zero.
    collinear = dihedral_harmonics(torch.tensor([1.0]), torch.tensor([cos_b]),
                                   torch.tensor([unit(axis) @ unit(w)]), 4)[0]
    np.testing.assert_allclose(collinear[1:].numpy(), 0.0, atol=1e-15)


def chain(dihedral_deg):
    """c-a-b-d, bonds 1.5 Å, angles 110°, the given dihedral: at a 2 Å cutoff the graph has the
    bonds only (1-3 distances 2.46 Å), so distances and angles are those of every dihedral."""
    bond, angle, phi = 1.5, np.radians(110.0), np.radians(dihedral_deg)
    a, b = np.zeros(3), np.array([bond, 0.0, 0.0])
    c = a + bond * np.array([np.cos(np.pi - angle), np.sin(np.pi - angle), 0.0]) * [-1, 1, 1]
    d = b + bond * np.array([-np.cos(angle), np.sin(angle) * np.cos(phi),
                             np.sin(angle) * np.sin(phi)])
    return Atoms("CCCC", positions=[c, a, b, d])


def test_quadruplets_see_the_dihedral_that_triplets_do_not():
    energies = {}
    for quadruplets in (False, True):
        torch.manual_seed(0)
        model = build_model("gemnet", ["C"], 2.0, quadruplets=quadruplets,
                            quadruplet_cutoff=2.0, n_features=16, n_layers=2,
                            n_triplet_features=8, n_quadruplet_features=8,
                            n_output_features=16).double()
        # The quadruplet message is a product of several freshly initialised projections
        # (~1e-11 of the energy at init); a trained model's are larger. Scale them up so the
        # dihedral's effect stands far above float64 rounding.
        for block in model.representation.blocks:
            if block.quadruplet is not None:
                for p in block.quadruplet.parameters():
                    p.data *= 5.0
        energies[quadruplets] = [
            float(model(atoms_to_graph(chain(phi), model), compute_forces=False)["energy"][0].detach())
            for phi in (60.0, 180.0)]
    t_gauche, t_trans = energies[False]
    q_gauche, q_trans = energies[True]
    assert abs(t_gauche - t_trans) < 1e-14 * abs(t_trans)
    assert abs(q_gauche - q_trans) > 1e-9 * abs(q_trans)


def test_receptive_field_in_graph_hops():
    """Quadruplets whose bonds can span more than one cutoff reach two hops per message."""
    n_layers = {q_cut: build_model("gemnet", ["Cu"], 5.0, quadruplets=True,
                                   quadruplet_cutoff=q_cut, n_layers=3).n_layers
                for q_cut in (2.5, 3.0)}
    assert n_layers == {2.5: 7, 3.0: 10}
    assert build_model("gemnet", ["Cu"], 5.0, n_layers=3).n_layers == 7
    with pytest.raises(ValueError, match="quadruplet_cutoff must be in"):
        build_model("gemnet", ["Cu"], 5.0, quadruplets=True, quadruplet_cutoff=6.0)


def test_quadruplets_fade_out_smoothly_at_their_cutoff():
    """A bond crossing the quadruplet cutoff (inside the edge cutoff): energy and forces show
    no jump (their changes across it shrink with the step, as for a smooth function)."""
    torch.manual_seed(0)
    model = build_model("gemnet", ["C"], 3.0, quadruplets=True, quadruplet_cutoff=1.8,
                        n_features=16, n_layers=1, n_triplet_features=8,
                        n_quadruplet_features=8, n_output_features=16).double()
    for p in model.representation.blocks[0].quadruplet.parameters():
        p.data *= 5.0  # as above: a visible quadruplet term

    def at(bond):
        atoms = chain(70.0)
        a = atoms.positions[1]
        atoms.positions[0] = a + bond * (atoms.positions[0] - a) / np.linalg.norm(atoms.positions[0] - a)
        out = model(atoms_to_graph(atoms, model))
        return float(out["energy"][0].detach()), out["forces"].detach().numpy()

    changes = []
    for step in (1e-3, 1e-4):
        (e_in, f_in), (e_out, f_out) = at(1.8 - step), at(1.8 + step)
        changes.append((abs(e_out - e_in), np.abs(f_out - f_in).max()))
    assert changes[1][0] < 0.2 * changes[0][0]
    assert changes[1][1] < 0.2 * changes[0][1]

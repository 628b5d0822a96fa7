"""Neighbour lists and graphs: every pbc combination, triclinic and small cells, errors."""
import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from conftest import rattled_triclinic
from geoff.graph import atoms_to_graph, batch_graphs, neighbour_list


def edge_set(i, j, vec):
    return sorted((int(a), int(b), *np.round(v, 8)) for a, b, v in zip(i, j, vec))


@pytest.mark.parametrize("pbc", list(itertools.product([False, True], repeat=3)))
def test_neighbours_match_ase_for_every_pbc(pbc):
    atoms = rattled_triclinic(seed=4)
    atoms.pbc = pbc
    cutoff = 4.5
    i, j, shifts = neighbour_list(atoms.positions, atoms.cell.array, np.array(pbc), cutoff)
    vec = atoms.positions[j] - atoms.positions[i] + shifts
    ai, aj, aD = ase_neighbor_list("ijD", atoms, cutoff)
    assert edge_set(i, j, vec) == edge_set(ai, aj, aD)
    assert np.all(np.linalg.norm(vec, axis=1) < cutoff)


def test_cell_smaller_than_cutoff_has_self_images():
    atoms = bulk("Cu", "fcc", a=3.6)  # one atom, primitive cell ~2.5 Å
    g = atoms_to_graph(atoms, species=["Cu"], cutoff=5.0)
    i, j = g["edge_index"]
    assert torch.all(i == j)  # every neighbour is an image of the atom itself
    ai, _ = ase_neighbor_list("ij", atoms, 5.0)
    assert len(ai) == i.shape[0] == 42  # 12 + 6 + 24 shells within 5 Å


def test_molecule_and_slab_need_no_cell():
    mol = molecule("CH3CH2OH")
    g = atoms_to_graph(mol, species=["C", "H", "O"], cutoff=3.0)
    assert g["edge_index"].shape[1] == len(ase_neighbor_list("i", mol, 3.0))
    slab = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    slab.pbc = [True, True, False]
    slab.cell[2] = 0.0  # singular along the non-periodic axis
    g = atoms_to_graph(slab, species=["Cu"], cutoff=4.0)
    ref = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    ref.pbc = [True, True, False]
    assert g["edge_index"].shape[1] == len(ase_neighbor_list("i", ref, 4.0))


def test_graph_keys_shapes_and_dtypes():
    atoms = rattled_triclinic()
    g = atoms_to_graph(atoms, species=["Cu", "Zr"], cutoff=4.0, dtype=torch.float32)
    n, e = len(atoms), g["edge_index"].shape[1]
    assert g["positions"].shape == (n, 3) and g["positions"].dtype == torch.float32
    assert g["species"].dtype == torch.int64 and g["species"].shape == (n,)
    assert g["edge_index"].shape == (2, e) and g["shifts"].shape == (e, 3)
    assert g["cell"].shape == (1, 3, 3) and g["batch"].shape == (n,)
    # r_ij = x_j - x_i + shift_ij are all within the cutoff
    i, j = g["edge_index"]
    r = (g["positions"][j] - g["positions"][i] + g["shifts"]).norm(dim=1)
    assert float(r.max()) < 4.0


def test_batching_offsets():
    a, b = rattled_triclinic(0), rattled_triclinic(1, n=(1, 2, 2))
    ga = atoms_to_graph(a, species=["Cu", "Zr"], cutoff=4.0)
    gb = atoms_to_graph(b, species=["Cu", "Zr"], cutoff=4.0)
    g = batch_graphs([ga, gb])
    assert g["cell"].shape == (2, 3, 3)
    assert int(g["batch"].max()) == 1 and int((g["batch"] == 1).sum()) == len(b)
    assert int(g["edge_index"][:, ga["edge_index"].shape[1]:].min()) >= len(a)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"species 'Pt' not in model species \['Cu', 'Zr'\]"):
        atoms_to_graph(Atoms("CuPt", positions=[[0, 0, 0], [2, 0, 0]]), species=["Cu", "Zr"], cutoff=4.0)
    with pytest.raises(ValueError, match="no atoms"):
        atoms_to_graph(Atoms(), species=["Cu"], cutoff=4.0)
    with pytest.raises(ValueError, match="singular cell"):
        atoms_to_graph(Atoms("Cu", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True),
                       species=["Cu"], cutoff=4.0)
    with pytest.raises(ValueError, match="positive"):
        atoms_to_graph(bulk("Cu"), species=["Cu"], cutoff=-1.0)
    with pytest.raises(ValueError, match="neighbours per atom"):
        atoms_to_graph(bulk("Cu"), species=["Cu"], cutoff=50.0)  # a cutoff in bohr? nm?
    bad = bulk("Cu") * (2, 1, 1)
    bad.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        atoms_to_graph(bad, species=["Cu"], cutoff=4.0)


def test_non_periodic_search_cell_ignores_the_periodic_extent():
    """Atoms ~2e6 Å apart along the one periodic vector (fuzz, calculator seed 14: ASE's wrap
    through a near-singular cell) once gave 2e6 Å non-periodic search vectors and 8 GB of
    bins; the vectors now span the structure across them only, and the edges are unchanged."""
    from geoff.graph import _neighbour_cell

    cell = np.array([[3.3725414437056997, 0.7073963710689242, 1.0],
                     [0.0, 6.4323899366197965, -0.4850339496268544],
                     [-5.655078175662061, 2.3388894625725922, -1.9425819952974266]])
    pos = np.array([[6.004830845062444, 3.0, 6.941287928941723],
                    [3.7955019666747756, 0.0, 1.071006104078405],
                    [0.5, 2.00001, 1.8373377672003357],
                    [7.168068772056989, 7.370774396193128, 10.0]])
    pbc = np.array([True, False, False])
    far = pos + np.array([[6e5], [-2e5], [1e5], [0.0]]) * cell[0]  # periodic translations
    search = _neighbour_cell(far, cell, pbc, 4.0)
    assert np.linalg.norm(search[1:], axis=1).max() < 50.0
    lengths = []
    for p in (pos, far):
        i, j, s = neighbour_list(p, cell, pbc, 4.0)
        lengths.append(np.sort(np.linalg.norm(p[j] - p[i] + s, axis=1)))
    np.testing.assert_allclose(lengths[1], lengths[0], atol=1e-6)


def test_atoms_species_matches_the_symbol_lookup():
    """The vectorised lookup by atomic number gives what the per-symbol one gives, for any
    order of the model's species, and falls back to it for labels that are not elements."""
    from geoff.graph import atoms_species, species_indices

    rng = np.random.default_rng(3)
    atoms = Atoms(numbers=rng.choice([29, 40, 13], size=200), positions=rng.random((200, 3)) * 20)
    for species in (["Cu", "Zr", "Al"], ["Zr", "Al", "Cu"]):
        z = atoms_species(atoms, species)
        assert z.dtype == np.int64
        np.testing.assert_array_equal(z, species_indices(atoms.get_chemical_symbols(), species))
    with pytest.raises(ValueError, match=r"species 'Al' not in model species \['Cu', 'Zr'\]"):
        atoms_species(atoms, ["Cu", "Zr"])
    with pytest.raises(ValueError, match=r"species 'Al', 'Cu', 'Zr' not in model species \['A'\]"):
        atoms_species(atoms, ["A"])  # not an element: the symbol path names every unknown

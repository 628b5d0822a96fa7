"""LAMMPS `pair_style geoff` against the ASE calculator, serial against MPI, Morse against
LAMMPS' native pair style, and the error messages (read from LAMMPS' own output).

Needs the plugin: `geoff lammps build` (or `make plugin`); skipped with that hint otherwise.
"""
import json
import re
import subprocess
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.geometry import cell_to_cellpar, cellpar_to_cell
from conftest import rattled_triclinic, small_model
from torch import nn

pytestmark = pytest.mark.lammps

from lammps_support import BIN, lammps  # noqa: E402  (skips without lammps or the plugin)
from geoff.calculators import GeoffCalculator  # noqa: E402
from geoff.export import METADATA_FILE, export, read_metadata  # noqa: E402
from geoff.lammps import lammps_instance, lmp_environment, plugin_path  # noqa: E402
from geoff.potentials import EnergyModel, available_models  # noqa: E402
from geoff.potentials.layers import scatter_sum  # noqa: E402

SPECIES = ["Cu", "Zr"]
CUTOFF = 4.0
SKIN = 1.0
# Models compared with ASE: schnet always, the others once they are registered (every local
# model: global frames see the whole structure and are not what a domain sees).
LOCAL_MODELS = {"schnet": {}, "painn": {}, "nequip": {}, "mace": {},
                "faenet": {"frames": "local"}, "dimenet": {}, "egnn": {}, "symgnn": {},
                "gemnet": {}}
# GemNet-Q (conftest.VARIANTS): 7 hops of ghosts at the test's 3 Å quadruplet cutoff, slow.
MODELS = [m for m in LOCAL_MODELS if m in available_models()] + \
    [pytest.param("gemnet-q", marks=pytest.mark.slow)]


# ------------------------------------------------------------------------------ helpers


def lammps_frame(atoms):
    """The structure rotated so that its cell is LAMMPS' lower-triangular one, wrapped."""
    atoms = atoms.copy()
    atoms.set_cell(cellpar_to_cell(cell_to_cellpar(atoms.cell)), scale_atoms=True)
    atoms.wrap()
    return atoms


def structures():
    rng = np.random.default_rng(1)
    cubic = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    cubic.positions += rng.normal(scale=0.1, size=cubic.positions.shape)
    cubic.symbols[[1, 5, 9]] = "Zr"
    small = bulk("Cu", "fcc", a=3.7, cubic=True)          # 3.7 Å cell < 4 Å cutoff
    small.positions += rng.normal(scale=0.1, size=small.positions.shape)
    small.symbols[2] = "Zr"
    return {"cubic": cubic, "triclinic": rattled_triclinic(), "small": small}


def setup_box(lmp, atoms, species=SPECIES, triclinic=True):
    c = [[float(v) for v in row] for row in atoms.cell.array]
    lmp.command("units metal")
    lmp.command("atom_modify map array")
    lmp.command("boundary p p p")
    if triclinic:
        lmp.command(f"region box prism 0 {c[0][0]!r} 0 {c[1][1]!r} 0 {c[2][2]!r} "
                    f"{c[1][0]!r} {c[2][0]!r} {c[2][1]!r} units box")
    else:
        lmp.command(f"region box block 0 {c[0][0]!r} 0 {c[1][1]!r} 0 {c[2][2]!r} units box")
    lmp.command(f"create_box {len(species)} box")
    types = [species.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types,
                     [float(v) for v in atoms.positions.ravel()])
    lmp.command("mass * 63.5")
    lmp.command(f"neighbor {SKIN} bin")


def run0(lmp, stress_atom=False):
    """Energy, forces (by ID), pressure tensor (bar), per-atom energies (and the sum of the
    per-atom virials, as pressure x volume) after `run 0`."""
    lmp.command("compute pea all pe/atom")
    keys = "pe pxx pyy pzz pxy pxz pyz".split()
    if stress_atom:
        lmp.command("compute sa all stress/atom NULL virial")
        lmp.command("compute sasum all reduce sum " + " ".join(f"c_sa[{k}]" for k in range(1, 7)))
        keys += [f"c_sasum[{k}]" for k in range(1, 7)]
    lmp.command("thermo_style custom " + " ".join(keys))
    lmp.command("run 0")
    values = np.array([lmp.get_thermo(k) if not k.startswith("c_") else
                       lmp.extract_compute("sasum", 0, 1)[int(k[-2]) - 1] for k in keys])
    forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3).copy()
    pe_atom = np.ctypeslib.as_array(lmp.gather("c_pea", 1, 1)).ravel().copy()
    lmp.command("uncompute pea")
    if stress_atom:
        lmp.command("uncompute sasum")
        lmp.command("uncompute sa")
    return values[0], forces, values[1:7], pe_atom, values[7:]


def ase_reference(atoms, model, nktv2p):
    atoms = atoms.copy()
    atoms.calc = GeoffCalculator(model, dtype="float64")
    s = atoms.get_stress(voigt=False)
    pressure = -np.array([s[0, 0], s[1, 1], s[2, 2], s[0, 1], s[0, 2], s[1, 2]]) * nktv2p
    return (atoms.get_potential_energy(), atoms.get_forces(), pressure,
            atoms.get_potential_energies())


def assert_agree(got, ref, label):
    e, f, p, pe_atom = got[:4]
    E, F, P, Ei = ref
    assert abs(e - E) < 1e-8, f"{label}: energy {e} vs ASE {E}"
    assert np.abs(f - F).max() < 1e-8, f"{label}: forces differ by {np.abs(f - F).max()}"
    assert np.abs(pe_atom - Ei).max() < 1e-8, f"{label}: per-atom energies differ"
    rel = np.abs(p - P).max() / np.abs(P).max()
    assert rel < 1e-6, f"{label}: pressure {p} vs ASE {P} (relative {rel:.2e})"


def geoff_pair(lmp, path, graph="auto", comm=None, species=SPECIES, device=None):
    lmp.command(f"pair_style geoff graph {graph}" + (f" device {device}" if device else ""))
    lmp.command(f"pair_coeff * * {path} {' '.join(species)}")
    if comm:
        lmp.command(f"comm_modify cutoff {comm}")


def ghost_cutoff(path):
    """The ghost shell an exported model needs: its reach, read from the export's metadata."""
    meta = read_metadata(path)
    return meta["receptive_hops"] * meta["cutoff"] + SKIN


def lammps_error(commands, atoms=None, species=SPECIES):
    """The message of the LAMMPS error that `commands` raise."""
    lmp = lammps_instance()
    try:
        setup_box(lmp, atoms if atoms is not None else lammps_frame(structures()["cubic"]),
                  species)
        with pytest.raises(Exception) as info:
            for c in commands:
                lmp.command(c)
            lmp.command("run 0")
        return str(info.value)
    finally:
        lmp.close()


def with_metadata(src, dst, **changes):
    """Copy an exported model with some metadata changed (as another geoff could write)."""
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(str(src), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    meta.update(changes)
    torch.jit.save(module, str(dst), _extra_files={METADATA_FILE: json.dumps(meta)})
    return dst


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lammps")


@pytest.fixture(scope="module")
def schnet(workdir):
    model = small_model("schnet", cutoff=CUTOFF)
    return model, export(model, workdir / "schnet.pt")


# ------------------------------------------------------------------------------ ASE


def replace_structure(lmp, atoms, species=SPECIES):
    """Swap the atoms and (triclinic) box of a running instance, keeping its pair style."""
    c = [[float(v) for v in row] for row in atoms.cell.array]
    lmp.command("delete_atoms group all")
    lmp.command(f"change_box all x final 0 {c[0][0]!r} y final 0 {c[1][1]!r} z final 0 "
                f"{c[2][2]!r} xy final {c[1][0]!r} xz final {c[2][0]!r} yz final {c[2][1]!r} "
                "units box")
    types = [species.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types,
                     [float(v) for v in atoms.positions.ravel()])


@pytest.mark.parametrize("name", MODELS)
def test_run0_matches_ase(name, workdir):
    """run 0 on cubic, triclinic and small (cell < cutoff) cells with both graphs: energy,
    forces and per-atom energies to 1e-8, pressure tensor to 1e-6 relative; the per-atom
    virials (compute stress/atom) sum to the global virial."""
    model = small_model(name, cutoff=CUTOFF, **LOCAL_MODELS.get(name, {}))
    path = export(model, workdir / f"{name}.pt")
    cases = {label: lammps_frame(atoms) for label, atoms in structures().items()}
    refs = {}
    for graph in ("periodic", "ghosts"):
        lmp = lammps_instance()
        try:
            setup_box(lmp, cases["cubic"])
            geoff_pair(lmp, path, graph, comm=ghost_cutoff(path))
            for label, atoms in cases.items():
                replace_structure(lmp, atoms)
                if label not in refs:
                    refs[label] = ase_reference(atoms, model, lmp.extract_global("nktv2p"))
                ref = refs[label]
                assert_agree(run0(lmp), ref, f"{name} {label} graph {graph}")
                got = run0(lmp, stress_atom=True)
                assert_agree(got, ref, f"{name} {label} graph {graph} (stress/atom)")
                virial_sum = -got[4] / atoms.get_volume()
                assert np.abs(virial_sum - ref[2]).max() / np.abs(ref[2]).max() < 1e-6, \
                    f"{name} {label} graph {graph}: per-atom virials do not sum to the virial"
        finally:
            lmp.close()


@pytest.mark.skipif("faenet" not in available_models(), reason="faenet not registered yet")
def test_global_frames_serial_matches_ase(workdir):
    """A global-frame model runs on one rank (graph periodic sees what ASE sees); graph ghosts
    is refused with a message."""
    model = small_model("faenet", cutoff=CUTOFF, frames="global")
    path = export(model, workdir / "faenet_global.pt")
    atoms = lammps_frame(structures()["triclinic"])
    lmp = lammps_instance()
    try:
        setup_box(lmp, atoms)
        ref = ase_reference(atoms, model, lmp.extract_global("nktv2p"))
        geoff_pair(lmp, path)
        assert_agree(run0(lmp), ref, "faenet global frames")
        geoff_pair(lmp, path, "ghosts")
        with pytest.raises(Exception, match="uses global frames.*use graph periodic"):
            lmp.command("run 0")
    finally:
        lmp.close()


def test_direct_force_head(workdir):
    """A direct force head: forces of local atoms only (ghost copies do not add), one more
    cutoff sphere of ghosts; per-atom virials are refused with a message."""
    model = small_model("schnet", cutoff=CUTOFF, force_head="direct")
    path = export(model, workdir / "schnet_direct.pt")
    atoms = lammps_frame(structures()["cubic"])
    lmp = lammps_instance()
    try:
        setup_box(lmp, atoms)
        ref = ase_reference(atoms, model, lmp.extract_global("nktv2p"))
        for graph in ("periodic", "ghosts"):
            geoff_pair(lmp, path, graph, comm=ghost_cutoff(path))
            assert_agree(run0(lmp), ref, f"schnet direct graph {graph}")
        with pytest.raises(Exception, match="per-atom virial .* needs a conservative model"):
            run0(lmp, stress_atom=True)
    finally:
        lmp.close()


def test_cluster_matches_ase(schnet):
    """A non-periodic cluster (boundary f f f): energy and forces as in ASE, both graphs."""
    from conftest import cluster

    model, path = schnet
    atoms = cluster()
    ref = atoms.copy()
    ref.calc = GeoffCalculator(model, dtype="float64")
    lmp = lammps_instance()
    try:
        lo, hi = atoms.positions.min(axis=0) - 5.0, atoms.positions.max(axis=0) + 5.0
        for c in ["units metal", "atom_modify map array", "boundary f f f",
                  f"region box block {lo[0]} {hi[0]} {lo[1]} {hi[1]} {lo[2]} {hi[2]} units box",
                  "create_box 2 box", "mass * 63.5", f"neighbor {SKIN} bin"]:
            lmp.command(c)
        types = [SPECIES.index(s) + 1 for s in atoms.get_chemical_symbols()]
        lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types,
                         [float(v) for v in atoms.positions.ravel()])
        for graph in ("periodic", "ghosts"):
            geoff_pair(lmp, path, graph, comm=ghost_cutoff(path))
            e, f, _, pe_atom, _ = run0(lmp)
            assert abs(e - ref.get_potential_energy()) < 1e-8, graph
            assert np.abs(f - ref.get_forces()).max() < 1e-8, graph
            assert np.abs(pe_atom - ref.get_potential_energies()).max() < 1e-8, graph
    finally:
        lmp.close()


def test_float32_export(workdir):
    model = small_model("schnet", cutoff=CUTOFF)
    path = export(model, workdir / "schnet32.pt", dtype="float32")
    atoms = lammps_frame(structures()["triclinic"])
    lmp = lammps_instance()
    try:
        setup_box(lmp, atoms)
        ref = ase_reference(atoms, model, lmp.extract_global("nktv2p"))
        for graph in ("periodic", "ghosts"):
            geoff_pair(lmp, path, graph, comm=ghost_cutoff(path))
            e, f, p, _, _ = run0(lmp)
            assert abs(e - ref[0]) < 1e-5 * abs(ref[0])
            assert np.abs(f - ref[1]).max() < 1e-4
            assert np.abs(p - ref[2]).max() < 1e-4 * np.abs(ref[2]).max()
    finally:
        lmp.close()


# ------------------------------------------------------------------------------ Morse


class Morse(nn.Module):
    """Per-atom Morse energy 1/2 sum_j D0 (exp(-2a(r-r0)) - 2 exp(-a(r-r0))) as a one-channel
    'representation', so that the whole EnergyModel/export path is exercised."""

    def __init__(self, d0: float, alpha: float, r0: float):
        super().__init__()
        self.n_scalars, self.n_vectors, self.n_layers = 1, 0, 1
        self.d0, self.alpha, self.r0 = d0, alpha, r0

    def forward(self, data: Dict[str, torch.Tensor], edge_vec: torch.Tensor):
        r = torch.linalg.norm(edge_vec, dim=-1)
        x = torch.exp(-self.alpha * (r - self.r0))
        pair = self.d0 * (x * x - 2.0 * x)  # (E,)
        n = data["positions"].shape[0]
        return {"scalars": 0.5 * scatter_sum(pair, data["edge_index"][0], n).unsqueeze(-1)}


def morse_model(d0=0.35, alpha=1.36, r0=2.6, cutoff=5.0):
    model = EnergyModel(Morse(d0, alpha, r0), ["Cu"], cutoff, name="morse")
    model.energy_head = nn.Identity()
    return model.double().eval()


def test_morse_matches_native_pair_style(workdir):
    model = morse_model()
    path = export(model, workdir / "morse.pt")
    rng = np.random.default_rng(3)
    for label, atoms in {"cubic": bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3),
                         "triclinic": rattled_triclinic(n=(3, 3, 3))}.items():
        atoms = atoms.copy()
        atoms.symbols[:] = "Cu"
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms = lammps_frame(atoms)
        lmp = lammps_instance()
        try:
            setup_box(lmp, atoms, species=["Cu"])
            lmp.command("pair_style morse 5.0")
            lmp.command("pair_coeff * * 0.35 1.36 2.6")
            native = run0(lmp, stress_atom=True)
            for graph in ("periodic", "ghosts"):
                geoff_pair(lmp, path, graph, species=["Cu"])
                got = run0(lmp, stress_atom=True)
                assert abs(got[0] - native[0]) < 1e-9 * len(atoms), f"{label} {graph}: energy"
                assert np.abs(got[1] - native[1]).max() < 1e-10, f"{label} {graph}: forces"
                assert np.abs(got[2] - native[2]).max() < 1e-8 * np.abs(native[2]).max()
                assert np.abs(got[3] - native[3]).max() < 1e-10, f"{label} {graph}: pe/atom"
                assert np.abs(got[4] - native[4]).max() < 1e-8 * np.abs(native[4]).max(), \
                    f"{label} {graph}: per-atom virial"
        finally:
            lmp.close()


# ------------------------------------------------------------------------------ MPI

# IDs from create_atoms depend on the number of ranks: velocities by position (loop geom).
DECK = """\
units metal
atom_modify map array
lattice fcc 3.7
region box block 0 5 0 5 0 5
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.3 12345
mass * 63.5
displace_atoms all random 0.05 0.05 0.05 42
velocity all create 600 4928459 dist gaussian loop geom
neighbor {skin} bin
pair_style geoff
pair_coeff * * {model} Cu Zr
comm_modify cutoff {comm}
fix 1 all nve
timestep 0.002
thermo 10
thermo_style custom step pe ke etotal press pxx pyy pzz pxy pxz pyz
thermo_modify format float %22.15e
run 50
"""


def thermo_table(output):
    rows = [line.split() for line in output.splitlines()]
    rows = [r for r in rows if len(r) == 11 and r[0].isdigit()]
    return np.array(rows, dtype=float)


def test_mpi_matches_serial(schnet, workdir):
    """500 atoms, 50 NVE steps: `mpirun -np 2` (graph ghosts, domain decomposition) and the
    serial run (graph periodic) print the same thermo to 1e-8 relative. The serial run goes
    through the wheel's `lmp` script, which finds the plugin through the entry point."""
    model, path = schnet
    deck = workdir / "in.mpi"
    deck.write_text(DECK.format(model=path, skin=SKIN, comm=ghost_cutoff(path)))
    env = lmp_environment(plugin=False)
    env.pop("LAMMPS_PLUGIN_PATH", None)   # the `lmp` script must find the plugin itself
    env["OMP_NUM_THREADS"] = "1"
    serial = subprocess.run([str(BIN / "lmp"), "-in", str(deck), "-log", "none"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert serial.returncode == 0, serial.stdout[-3000:] + serial.stderr[-3000:]
    assert "periodic graph" in serial.stdout
    binary = Path(lammps.__file__).parent / "lmp"
    parallel = subprocess.run([str(BIN / "mpirun"), "-np", "2", str(binary), "-in", str(deck),
                               "-log", "none"], env=lmp_environment() | {"OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=600)
    assert parallel.returncode == 0, parallel.stdout[-3000:] + parallel.stderr[-3000:]
    assert "ghosts graph, mean over 2 rank(s)" in parallel.stdout
    a, b = thermo_table(serial.stdout), thermo_table(parallel.stdout)
    assert a.shape == b.shape == (6, 11)
    scale = np.abs(a).max(axis=0) + 1e-300
    rel = np.abs(a - b) / scale
    assert rel.max() < 1e-8, f"serial vs MPI thermo differ by {rel.max():.2e} (relative)"
    assert abs(a[-1, 3] - a[0, 3]) < 1e-3 * abs(a[0, 2]), "NVE energy drifts"


# ------------------------------------------------------------------------------ errors


def test_error_missing_model_file(workdir):
    msg = lammps_error([f"pair_style geoff", f"pair_coeff * * {workdir}/nope.pt Cu Zr"])
    assert "cannot open model file" in msg and "nope.pt" in msg and "geoff export" in msg


def test_error_element_not_in_model(schnet):
    msg = lammps_error(["pair_style geoff", f"pair_coeff * * {schnet[1]} Cu Pt"])
    assert "element 'Pt' (atom type 2) is not in the species ['Cu', 'Zr']" in msg


def test_error_wrong_number_of_elements(schnet):
    msg = lammps_error(["pair_style geoff", f"pair_coeff * * {schnet[1]} Cu"])
    assert "lists 1 element(s) but the box has 2 atom type(s)" in msg


def test_error_not_geoff_torchscript(workdir):
    plain = workdir / "plain.pt"
    torch.jit.save(torch.jit.script(nn.Linear(3, 1)), str(plain))
    msg = lammps_error(["pair_style geoff", f"pair_coeff * * {plain} Cu Zr"])
    assert "is a TorchScript file but not a geoff model" in msg and "geoff export" in msg
    text = workdir / "notes.pt"
    text.write_text("not a model")
    msg = lammps_error(["pair_style geoff", f"pair_coeff * * {text} Cu Zr"])
    assert "is not a TorchScript file" in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_error_cuda_model_without_gpu(schnet, workdir):
    cuda = with_metadata(schnet[1], workdir / "cuda.pt", device="cuda")
    msg = lammps_error(["pair_style geoff", f"pair_coeff * * {cuda} Cu Zr"])
    assert "is for CUDA but torch sees no GPU" in msg and "device cpu" in msg


def test_error_newton_off(schnet):
    msg = lammps_error(["newton off on", "pair_style geoff", f"pair_coeff * * {schnet[1]} Cu Zr"])
    assert "needs `newton on`" in msg


def test_error_ghost_shell_too_thin(schnet):
    """graph ghosts needs comm_modify cutoff >= n_layers x cutoff + skin: the error prints the
    exact line, and that line makes the run work."""
    model, path = schnet
    msg = lammps_error(["pair_style geoff graph ghosts", f"pair_coeff * * {path} Cu Zr"])
    line = re.search(r"^ *(comm_modify cutoff [0-9.]+) *$", msg, re.M)
    assert line, msg
    assert float(line.group(1).split()[-1]) == pytest.approx(ghost_cutoff(path))
    lmp = lammps_instance()
    try:
        setup_box(lmp, lammps_frame(structures()["cubic"]))
        for c in ["pair_style geoff graph ghosts", f"pair_coeff * * {path} Cu Zr",
                  line.group(1), "run 0"]:
            lmp.command(c)
    finally:
        lmp.close()


def test_ghost_shell_comes_from_receptive_hops(schnet, workdir):
    """The plugin sizes the ghost shell by the metadata's receptive_hops (here edited to 3 on a
    2-layer model); a format-1 file (no receptive_hops) gets n_layers x cutoff + skin."""
    def asked_shell(path):
        msg = lammps_error(["pair_style geoff graph ghosts", f"pair_coeff * * {path} Cu Zr"])
        return float(re.search(r"^ *comm_modify cutoff ([0-9.]+) *$", msg, re.M).group(1))

    wide = with_metadata(schnet[1], workdir / "wide.pt", receptive_hops=3)
    assert asked_shell(wide) == pytest.approx(3 * CUTOFF + SKIN)
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(str(schnet[1]), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    meta["format_version"] = 1
    del meta["receptive_hops"]
    old = workdir / "format1.pt"
    torch.jit.save(module, str(old), _extra_files={METADATA_FILE: json.dumps(meta)})
    assert asked_shell(old) == pytest.approx(schnet[0].n_layers * CUTOFF + SKIN)


def test_error_global_frames_under_mpi(schnet, workdir):
    glob = with_metadata(schnet[1], workdir / "global.pt", needs_global_frames=True)
    deck = workdir / "in.global"
    deck.write_text(DECK.format(model=glob, skin=SKIN, comm=ghost_cutoff(schnet[1]))
                    .replace("run 50", "run 0"))
    binary = Path(lammps.__file__).parent / "lmp"
    out = subprocess.run([str(BIN / "mpirun"), "-np", "2", str(binary), "-in", str(deck),
                          "-log", "none"], env=lmp_environment() | {"OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "uses global frames" in out.stdout + out.stderr
    assert "cannot be split over 2 MPI ranks" in out.stdout + out.stderr


def test_cli_lammps_path(capsys):
    from geoff.cli import main

    assert main(["lammps", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(plugin_path())

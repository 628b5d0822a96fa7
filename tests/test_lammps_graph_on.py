"""`pair_style geoff ... graph_on device` against `graph_on host`: the same graph, found on the
model's device from the candidates of each neighbour-list build.

A hot triclinic Cu/Zr cell runs 60 NVE steps (several neighbour-list builds: atoms move more
than half the skin) in float64; every 20 steps the per-atom forces, energies and virials
(compute pe/atom, stress/atom) of the two runs agree to 1e-12 relative, on 1 rank (graph
periodic, graph layers, and the chunked pieces) and on 2 ranks (graph layers).
Needs the plugin (`geoff lammps build`).
"""
import re
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.lammps

from lammps_support import BIN, LMP  # noqa: E402  (skips without lammps or the plugin)
from conftest import small_model  # noqa: E402

from geoff.export import export  # noqa: E402
from geoff.lammps import lmp_environment  # noqa: E402

CUTOFF = 4.0
TOLERANCE = 1e-12    # relative to each column's largest value
STEPS, EVERY = 60, 20
COLUMNS = "id fx fy fz c_pe " + " ".join(f"c_sa[{k}]" for k in range(1, 7))

# neighbor 0.6 and `check yes`: with 1500 K atoms cross the half skin every few steps, so the
# device graph's candidates are rebuilt several times; between builds they are reused.
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
neighbor 0.6 bin
neigh_modify every 1 delay 0 check yes
pair_style geoff {style} overlap 0.3
pair_coeff * * {model} Cu Zr
compute pe all pe/atom
compute sa all stress/atom NULL virial
fix 1 all nve
timestep 0.002
dump d all custom {every} {dump} {columns}
dump_modify d sort id format float %22.15e
thermo {every}
run {steps}
"""


def run_deck(workdir, model, label, style, ranks=1):
    """Per-atom table (frames, atoms, columns) and stdout of one run."""
    dump = workdir / f"dump.{label}"
    deck = workdir / f"in.{label}"
    deck.write_text(DECK.format(style=style, model=model, dump=dump, every=EVERY, steps=STEPS,
                                columns=COLUMNS))
    command = [str(LMP), "-in", str(deck), "-log", "none"]
    if ranks > 1:
        command = [str(BIN / "mpirun"), "-np", str(ranks)] + command
    env = lmp_environment() | {"OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    frames = dump.read_text().split(f"ITEM: ATOMS {COLUMNS}\n")[1:]
    table = np.array([np.loadtxt(f.split("ITEM")[0].splitlines()) for f in frames])
    assert table.shape[0] == STEPS // EVERY + 1
    return table, out.stdout


def neighbour_builds(stdout):
    found = re.search(r"Neighbor list builds = (\d+)", stdout)
    assert found, stdout[-2000:]
    return int(found.group(1))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("graph_on")
    return workdir, export(small_model("painn", cutoff=CUTOFF), workdir / "painn.pt")


CASES = [("graph periodic", 1), ("graph layers", 1), ("graph layers chunk 300", 1),
         ("graph auto", 2)]


@pytest.mark.parametrize("style,ranks", CASES)
def test_device_graph_matches_host_graph(style, ranks, model):
    workdir, path = model
    label = f"{style.replace(' ', '_')}_np{ranks}"
    host, host_out = run_deck(workdir, path, label + "_host", style + " graph_on host", ranks)
    device, out = run_deck(workdir, path, label + "_device", style + " graph_on device", ranks)
    assert "pair_style geoff: graph_on device (candidate edges" in out
    assert "graph_on device" not in host_out
    builds = re.search(r"graph_on device: (\d+) candidate builds per rank", out)
    assert builds and int(builds.group(1)) >= 2, out[-2000:]    # the setup call's is not counted
    assert neighbour_builds(out) >= 3, "too few neighbour-list builds to exercise the rebuilds"
    assert neighbour_builds(out) == neighbour_builds(host_out)
    assert np.array_equal(host[:, :, 0], device[:, :, 0])
    scale = np.abs(host[:, :, 1:]).max(axis=(0, 1)) + 1e-300
    rel = float((np.abs(device[:, :, 1:] - host[:, :, 1:]) / scale).max())
    print(f"{style} on {ranks} rank(s), {STEPS} NVE steps, {neighbour_builds(out)} neighbour "
          f"builds: forces, per-atom energies and virials, device vs host graph {rel:.2e}")
    assert rel < TOLERANCE, f"{style} on {ranks} rank(s): device graph differs by {rel:.2e}"
    assert np.abs(host[-1, :, 1:4]).max() > 0    # the run computed forces
    if "chunk" in style:
        assert "chunk" in out and "chunks" in out.split("Loop time")[-1]


def test_graph_on_keyword_is_checked(model):
    workdir, path = model
    deck = workdir / "in.bad"
    deck.write_text("units metal\npair_style geoff graph_on gpu\n")
    out = subprocess.run([str(LMP), "-in", str(deck), "-log", "none"], capture_output=True,
                         text=True, env=lmp_environment(), timeout=120)
    assert "graph_on must be auto, host or device, got 'gpu'" in out.stdout + out.stderr

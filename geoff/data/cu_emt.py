"""``cu-emt``: FCC copper labelled with ASE's effective-medium-theory (EMT) potential.

What is generated (fractions of ``n``, every cell 31-108 atoms)
-------------------------------------------------------------
- ``bulk`` (40 %): Langevin MD snapshots of perfect FCC cells at 300, 600, 900, 1200 and
  1500 K; cells: cubic 2x2x2 (32 atoms), 2x2x3 (48), 3x3x2 (72), 3x3x3 (108) and the
  rhombohedral primitive 4x4x4 (64, a triclinic cell); lattice constant a(T) = 3.590 Å x
  (1 + 1.64e-5 K^-1 T + 3.1e-9 K^-2 T^2), fitted to EMT Cu's thermal expansion so that the
  cells sit near zero pressure.
- ``strain`` (15 %): the same MD in strained cells, a random volumetric strain in ±3 % and
  random shear strains (xy, xz, yz) in ±3 %; the strain (Voigt) is in ``info['strain']``.
- ``vacancy`` (15 %): one or two vacancies in the bulk cells, MD at the same temperatures.
- ``surface`` (15 %): slabs periodic in 2D (``pbc = (True, True, False)``, 7 Å of vacuum on
  each side): (100), (111) and (110), 36-64 atoms, MD at 300-1200 K.
- ``liquid`` (15 %): 72- and 108-atom cubic cells at about zero pressure (volume of an FCC
  cell with a = 1.065 a0 (1 + 2.2e-5 K^-1 (T - 1600 K))), atoms placed at random (no pair
  closer than 2 Å; a perfect crystal would superheat instead of melting), melted at 3000 K
  for 0.5 ps, then sampled at 1600, 2000 and 2500 K with a weaker thermostat (0.005 fs^-1).

MD: ASE ``Langevin`` (friction 0.02 fs^-1), time step 4 fs (2.5 fs at 1500 K and above,
2 fs while melting); each chain starts from the ideal structure with Maxwell-Boltzmann
velocities at 2T (equipartition halves it), runs 60 burn-in steps, then keeps a snapshot every
10 steps (12 per chain; fewer for small ``n`` so that every temperature is visited). The
centre of mass is held fixed (``FixCom``). Labels: ``energy`` and per-atom ``energies``
(eV), ``forces`` (eV/Å), ``stress`` (eV/Å^3, ASE sign, Voigt; 3D-periodic cells only). EMT
is ASE's (``ase.calculators.emt.EMT``, default parameters), evaluated by
:class:`geoff.data.emt.VectorisedEMT`, which gives the same numbers to rounding (< 1e-10 eV,
tested).

Provenance
----------
Each frame's ``info``: ``generator`` ("cu-emt"), ``config_type``, ``structure``,
``temperature_K``, ``seed``, ``chain`` (frames of one MD chain are correlated: split by chain
when it matters), ``md_step``. The run's parameters and counts go to
``<output>.provenance.json``. The same ``seed`` and ``n`` give identical files.
Generation time (2-core development VM shared with other jobs, load ~6): ``--n 500`` took
34 s wall, 23 s CPU (44 s for the whole ``geoff data`` process). The first run on a fresh
install adds 10-20 s of numba compilation for :mod:`geoff.data.emt` (cached afterwards).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc110, fcc111

from .io import label

NAME = "cu-emt"
DEFAULT_N = 500
A0 = 3.590  # Å, the EMT equilibrium lattice constant of Cu at 0 K
EXPANSION = (1.64e-5, 3.1e-9)  # a(T) = A0 (1 + c1 T + c2 T^2): EMT Cu's expansion, P ~ 0
TEMPERATURES_K = (300, 600, 900, 1200, 1500)
SURFACE_TEMPERATURES_K = (300, 600, 900, 1200)
LIQUID_TEMPERATURES_K = (1600, 2000, 2500)
MELT_TEMPERATURE_K = 3000
FRACTIONS = {"bulk": 0.40, "strain": 0.15, "vacancy": 0.15, "surface": 0.15, "liquid": 0.15}
STRAIN_MAX = 0.03
FRICTION = 0.02  # 1/fs
BURN_IN_STEPS = 60
INTERVAL_STEPS = 10
FRAMES_PER_CHAIN = 12
MELT_STEPS = 250  # x 2 fs

# name -> (builder of the ideal cell at lattice constant a)
BULK_CELLS: Dict[str, Callable[[float], Atoms]] = {
    "fcc-cubic-2x2x2": lambda a: bulk("Cu", "fcc", a=a, cubic=True) * (2, 2, 2),
    "fcc-cubic-2x2x3": lambda a: bulk("Cu", "fcc", a=a, cubic=True) * (2, 2, 3),
    "fcc-primitive-4x4x4": lambda a: bulk("Cu", "fcc", a=a) * (4, 4, 4),
    "fcc-cubic-3x3x2": lambda a: bulk("Cu", "fcc", a=a, cubic=True) * (3, 3, 2),
    "fcc-cubic-3x3x3": lambda a: bulk("Cu", "fcc", a=a, cubic=True) * (3, 3, 3),
}
SURFACES: Dict[str, Callable[[float], Atoms]] = {
    "fcc100-3x3x6": lambda a: fcc100("Cu", (3, 3, 6), a=a, vacuum=7.0),
    "fcc111-3x3x6": lambda a: fcc111("Cu", (3, 3, 6), a=a, vacuum=7.0),
    "fcc110-3x3x6": lambda a: fcc110("Cu", (3, 3, 6), a=a, vacuum=7.0),
    "fcc100-4x4x4": lambda a: fcc100("Cu", (4, 4, 4), a=a, vacuum=7.0),
    "fcc111-4x4x4": lambda a: fcc111("Cu", (4, 4, 4), a=a, vacuum=7.0),
}
LIQUID_CELLS = ("fcc-cubic-3x3x2", "fcc-cubic-3x3x3")
LIQUID_SCALE = 1.065  # liquid at 1600 K: volume of FCC with a = 1.065 a0 (P ~ 0 GPa)
LIQUID_EXPANSION = 2.2e-5  # 1/K above 1600 K
LIQUID_FRICTION = 0.005  # 1/fs: a weaker thermostat lets the liquid diffuse


def lattice_constant(temperature_K: float) -> float:
    """FCC lattice constant (Å) at which EMT Cu is near zero pressure at ``temperature_K``."""
    c1, c2 = EXPANSION
    return A0 * (1.0 + c1 * temperature_K + c2 * temperature_K ** 2)


@dataclass
class Chain:
    """One MD run that yields ``n_frames`` snapshots."""

    config_type: str
    structure: str
    temperature_K: float
    n_frames: int
    info: Dict = field(default_factory=dict)


def plan(n: int, seed: int) -> List[Chain]:
    """The MD chains of a data set of ``n`` frames (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 0])
    counts = _split(n, FRACTIONS)
    combos = {
        "bulk": [(s, t) for s in BULK_CELLS for t in TEMPERATURES_K],
        "strain": [(s, t) for s in BULK_CELLS for t in TEMPERATURES_K],
        "vacancy": [(s, t) for s in BULK_CELLS for t in TEMPERATURES_K],
        "surface": [(s, t) for s in SURFACES for t in SURFACE_TEMPERATURES_K],
        "liquid": [(s, t) for s in LIQUID_CELLS for t in LIQUID_TEMPERATURES_K],
    }
    chains: List[Chain] = []
    for config_type, count in counts.items():
        options = combos[config_type]
        # Cycle through all (structure, temperature) pairs in a shuffled order so that
        # small data sets still cover every temperature.
        order = _cover(options, rng)
        n_temperatures = len({t for _, t in options})
        # Up to FRAMES_PER_CHAIN frames per chain, fewer for small sets so that they still
        # visit every temperature.
        chain_length = int(np.clip(np.ceil(count / n_temperatures), 1, FRAMES_PER_CHAIN))
        k = 0
        while count > 0:
            structure, temperature = options[order[k % len(order)]]
            k += 1
            m = min(chain_length, count)
            count -= m
            info: Dict = {}
            if config_type == "strain":
                vol = rng.uniform(-STRAIN_MAX, STRAIN_MAX)
                shear = rng.uniform(-STRAIN_MAX, STRAIN_MAX, size=3)  # yz, xz, xy
                info["strain"] = [vol / 3] * 3 + list(shear)  # Voigt: xx yy zz yz xz xy
            if config_type == "vacancy":
                info["n_vacancies"] = int(rng.integers(1, 3))
            chains.append(Chain(config_type, structure, float(temperature), m, info))
    return chains


def _split(n: int, fractions: Dict[str, float]) -> Dict[str, int]:
    """Integer counts summing to ``n``, as close to the fractions as rounding allows."""
    raw = {k: n * f for k, f in fractions.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: counts[k] - raw[k])[:rest]:
        counts[k] += 1
    return counts


def _cover(options, rng) -> List[int]:
    """A shuffled order of the options that visits temperatures round-robin."""
    order = list(rng.permutation(len(options)))
    temps = sorted({t for _, t in options})
    by_t = {t: [k for k in order if options[k][1] == t] for t in temps}
    out = []
    while any(by_t.values()):
        for t in temps:
            if by_t[t]:
                out.append(by_t[t].pop())
    return out


def build(chain: Chain, rng: np.random.Generator) -> Atoms:
    """The starting structure of a chain."""
    t = chain.temperature_K
    if chain.config_type == "surface":
        atoms = SURFACES[chain.structure](lattice_constant(min(t, 900.0)))
        atoms.pbc = (True, True, False)
        return atoms
    if chain.config_type == "liquid":
        a = A0 * LIQUID_SCALE * (1.0 + LIQUID_EXPANSION * (t - 1600.0))
        return random_packing(BULK_CELLS[chain.structure](a), rng)
    atoms = BULK_CELLS[chain.structure](lattice_constant(t))
    if chain.config_type == "strain":
        e = chain.info["strain"]
        eps = np.array([[e[0], e[5], e[4]], [e[5], e[1], e[3]], [e[4], e[3], e[2]]])
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    if chain.config_type == "vacancy":
        for index in sorted(rng.choice(len(atoms), chain.info["n_vacancies"], replace=False),
                            reverse=True):
            del atoms[int(index)]
    return atoms


def random_packing(atoms: Atoms, rng: np.random.Generator, d_min: float = 2.0) -> Atoms:
    """``atoms`` with its atoms placed at random in its (orthorhombic) cell, no two closer
    than ``d_min`` Å: a start that melts at once (a perfect crystal superheats for ps)."""
    lengths = np.diag(atoms.cell.array)
    if not np.allclose(atoms.cell.array, np.diag(lengths)):
        raise ValueError("random_packing needs an orthorhombic cell")
    placed = np.empty((0, 3))
    while len(placed) < len(atoms):
        trial = rng.uniform(0.0, 1.0, 3) * lengths
        delta = placed - trial
        delta -= np.round(delta / lengths) * lengths
        if len(placed) == 0 or (delta ** 2).sum(axis=1).min() > d_min ** 2:
            placed = np.vstack([placed, trial])
    atoms.positions = placed
    return atoms


def run_chain(chain: Chain, chain_index: int, seed: int,
              progress: Optional[Callable[[int], None]] = None) -> List[Atoms]:
    """Run one chain's MD and return its labelled snapshots."""
    from .emt import VectorisedEMT
    from .md import langevin, thermalise

    rng = np.random.default_rng([seed, 1, chain_index])
    atoms = build(chain, rng)
    atoms.calc = VectorisedEMT()
    temperature = chain.temperature_K
    if chain.config_type == "liquid":
        thermalise(atoms, MELT_TEMPERATURE_K, rng)
        langevin(atoms, 2.0, MELT_TEMPERATURE_K, FRICTION, rng).run(MELT_STEPS)
    else:
        thermalise(atoms, 2.0 * temperature, rng)
    dt = 2.5 if temperature >= 1500 else 4.0
    friction = LIQUID_FRICTION if chain.config_type == "liquid" else FRICTION
    md = langevin(atoms, dt, temperature, friction, rng)
    md.run(BURN_IN_STEPS)
    frames = []
    periodic = bool(atoms.pbc.all())
    for k in range(chain.n_frames):
        md.run(INTERVAL_STEPS)
        # The calculator's own numbers (FixCom would remove the net force from get_forces()).
        results = {"energy": atoms.get_potential_energy(),
                   "forces": atoms.get_forces(apply_constraint=False),
                   "energies": atoms.get_potential_energies()}
        if periodic:
            results["stress"] = atoms.get_stress(apply_constraint=False)
        frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.info.update(
            generator=NAME, config_type=chain.config_type, structure=chain.structure,
            temperature_K=temperature, seed=seed, chain=chain_index,
            md_step=BURN_IN_STEPS + (k + 1) * INTERVAL_STEPS, calculator="ase.EMT")
        if "strain" in chain.info:
            frame.info["strain"] = np.array(chain.info["strain"])
        if "n_vacancies" in chain.info:
            frame.info["n_vacancies"] = chain.info["n_vacancies"]
        frames.append(label(frame, **results))
        if progress is not None:
            progress(1)
    return frames


def generate(n: int = DEFAULT_N, seed: int = 0,
             progress: Optional[Callable[[int], None]] = None) -> Tuple[List[Atoms], Dict]:
    """``n`` labelled Cu frames and the run's provenance (see the module docstring)."""
    chains = plan(n, seed)
    frames: List[Atoms] = []
    for index, chain in enumerate(chains):
        frames.extend(run_chain(chain, index, seed, progress))
    counts: Dict[str, Dict[str, int]] = {}
    for f in frames:
        by_t = counts.setdefault(f.info["config_type"], {})
        key = f"{f.info['temperature_K']:g}K"
        by_t[key] = by_t.get(key, 0) + 1
    provenance = {
        "calculator": "ase.calculators.emt.EMT (default parameters), evaluated by "
                      "geoff.data.emt.VectorisedEMT",
        "lattice_constant_0K": A0, "thermal_expansion_c1_c2": list(EXPANSION),
        "temperatures_K": {"bulk/strain/vacancy": list(TEMPERATURES_K),
                           "surface": list(SURFACE_TEMPERATURES_K),
                           "liquid": list(LIQUID_TEMPERATURES_K),
                           "liquid_melt": MELT_TEMPERATURE_K},
        "liquid_lattice_scale_1600K": LIQUID_SCALE, "liquid_expansion_per_K": LIQUID_EXPANSION,
        "fractions": FRACTIONS, "strain_max": STRAIN_MAX,
        "md": {"thermostat": "ase.md.langevin.Langevin", "friction_per_fs": FRICTION,
               "liquid_friction_per_fs": LIQUID_FRICTION,
               "timestep_fs": "4 (2.5 at >= 1500 K, 2 while melting)",
               "burn_in_steps": BURN_IN_STEPS, "interval_steps": INTERVAL_STEPS,
               "frames_per_chain": FRAMES_PER_CHAIN, "melt_steps": MELT_STEPS},
        "n_chains": len(chains),
        "counts": counts,
        "units": {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3 (ASE sign, Voigt)",
                  "energies": "eV per atom"},
    }
    return frames, provenance

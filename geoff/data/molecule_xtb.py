"""``molecule-xtb``: MD17-style data sets (ethanol, aspirin) labelled with GFN2-xTB.

What is generated
-----------------
One Langevin trajectory of a single molecule in vacuum at 500 K (as in MD17), driven by
GFN2-xTB through the ``tblite`` package's ASE calculator (``tblite.ase.TBLite``, default
settings: electronic temperature 300 K, SCF accuracy 1). Time step 0.5 fs, friction
0.01 fs^-1; 0.5 ps of burn-in from the xTB-optimised geometry with Maxwell-Boltzmann
velocities at 500 K, then one snapshot every 10 steps (5 fs). Each snapshot is relabelled by
a *fresh* GFN2-xTB calculation (no wave-function restart from the previous MD step), so a
label depends only on the positions: ``energy`` (eV, total xTB energy, about -310 eV for
ethanol; the trainer's per-element reference energies take out the offset) and ``forces``
(eV/Å). No cell, no stress (``pbc = False``).

Molecules: ``ethanol`` (C2H6O, 9 atoms, from ``ase.build.molecule``) and ``aspirin``
(C9H8O4, 21 atoms; a hand-built geometry optimised with GFN2-xTB to fmax < 0.005 eV/Å, its
coordinates stored below).

``tblite`` runs its SCF with OpenMP; for a 9-21 atom molecule threads only cost time, and
on shared cores a lot (5x on the development VM), so the generator runs libgomp at
``threads`` (default 1) threads and restores the previous count afterwards.

Provenance
----------
Each frame's ``info``: ``generator`` ("molecule-xtb"), ``molecule``, ``config_type``
("md"), ``temperature_K``, ``seed``, ``chain`` (0: one trajectory, successive frames are
correlated), ``md_time_fs``. Run parameters and counts: ``<output>.provenance.json``.
Generation time (2-core development VM shared with other jobs, load ~6, 1 thread):
``--n 500`` took 60 s wall / 36 s CPU for ethanol and 337 s wall / 141 s CPU for aspirin.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from ase import Atoms

from .io import label

NAME = "molecule-xtb"
DEFAULT_N = 500
TEMPERATURE_K = 500.0
TIMESTEP_FS = 0.5
FRICTION = 0.01  # 1/fs
BURN_IN_FS = 500.0
INTERVAL_STEPS = 10
METHOD = "GFN2-xTB"

# GFN2-xTB-optimised aspirin (Å, centre of mass at the origin): ring C1-C6, carboxyl
# C7(=O)-O-H on C1, acetyl ester O-C(=O)-CH3 on C2, ring H on C3-C6.
ASPIRIN = (
    ("C", (0.9408, -0.0360, -0.3789)),
    ("C", (-0.2987, -0.6802, -0.2817)),
    ("C", (-0.3531, -2.0698, -0.2759)),
    ("C", (0.8089, -2.8147, -0.3546)),
    ("C", (2.0373, -2.1808, -0.4574)),
    ("C", (2.1003, -0.8011, -0.4770)),
    ("C", (1.0307, 1.4458, -0.3575)),
    ("O", (0.3256, 2.1734, 0.2936)),
    ("O", (2.0242, 1.9055, -1.1264)),
    ("H", (2.0544, 2.8747, -1.0862)),
    ("O", (-1.4763, 0.0252, -0.3208)),
    ("C", (-2.1110, 0.4990, 0.7831)),
    ("O", (-3.1620, 1.0483, 0.6446)),
    ("C", (-1.4206, 0.2723, 2.0995)),
    ("H", (-1.0753, -0.7557, 2.1902)),
    ("H", (-2.1071, 0.5133, 2.9054)),
    ("H", (-0.5618, 0.9401, 2.1483)),
    ("H", (-1.3186, -2.5494, -0.2180)),
    ("H", (0.7537, -3.8926, -0.3426)),
    ("H", (2.9435, -2.7623, -0.5266)),
    ("H", (3.0499, -0.2962, -0.5613)),
)
MOLECULES = ("ethanol", "aspirin")


def build_molecule(name: str) -> Atoms:
    """The starting geometry of ``name`` (``ethanol`` or ``aspirin``)."""
    if name == "ethanol":
        from ase.build import molecule as g2

        return g2("CH3CH2OH")
    if name == "aspirin":
        return Atoms([s for s, _ in ASPIRIN], positions=[p for _, p in ASPIRIN])
    raise ValueError(f"unknown molecule {name!r}; choose one of {list(MOLECULES)}")


def xtb_calculator():
    """A GFN2-xTB calculator from tblite (a clear error if tblite is missing)."""
    try:
        from tblite.ase import TBLite
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the molecule-xtb generator needs tblite (GFN2-xTB): pip install 'geoff[data]' "
            f"or pip install tblite ({exc})") from exc
    return TBLite(method=METHOD, verbosity=0)


@contextmanager
def openmp_threads(threads: Optional[int]):
    """Run the block with libgomp (which tblite uses) at ``threads`` threads, then restore
    the previous count. Yields whether the count could be set."""
    import ctypes

    gomp = previous = None
    if threads:
        try:
            gomp = ctypes.CDLL("libgomp.so.1")
            previous = gomp.omp_get_max_threads()
            gomp.omp_set_num_threads(int(threads))
        except (OSError, AttributeError):
            gomp = None
    try:
        yield gomp is not None
    finally:
        if gomp is not None:
            gomp.omp_set_num_threads(previous)


def reference_labels(atoms: Atoms) -> Dict[str, np.ndarray]:
    """Energy and forces of ``atoms`` from a fresh GFN2-xTB calculation."""
    probe = Atoms(atoms.numbers, positions=atoms.positions)
    probe.calc = xtb_calculator()
    return {"energy": probe.get_potential_energy(), "forces": probe.get_forces()}


def generate(n: int = DEFAULT_N, seed: int = 0, progress: Optional[Callable[[int], None]] = None,
             molecule: str = "ethanol", threads: int = 1,
             temperature_K: float = TEMPERATURE_K, burn_in_fs: float = BURN_IN_FS,
             interval_steps: int = INTERVAL_STEPS) -> Tuple[List[Atoms], Dict]:
    """``n`` labelled snapshots of one molecule's 500 K GFN2-xTB trajectory.

    ``threads``: OpenMP threads for tblite during the run (restored afterwards; 0 or None
    leaves them alone). With one thread the trajectory is bitwise reproducible.
    """
    if molecule not in MOLECULES:
        raise ValueError(f"unknown molecule {molecule!r}; choose one of {list(MOLECULES)}")
    with openmp_threads(threads) as limited:
        frames = _trajectory(n, seed, progress, molecule, temperature_K, burn_in_fs,
                             interval_steps)
    provenance = {
        "calculator": f"tblite {METHOD} (tblite.ase.TBLite, default settings); every snapshot "
                      "relabelled by a fresh calculation",
        "molecule": molecule, "formula": frames[0].get_chemical_formula(),
        "temperatures_K": [float(temperature_K)],
        "md": {"thermostat": "ase.md.langevin.Langevin", "timestep_fs": TIMESTEP_FS,
               "friction_per_fs": FRICTION, "burn_in_fs": burn_in_fs,
               "interval_steps": interval_steps,
               "interval_fs": interval_steps * TIMESTEP_FS},
        "openmp_threads": int(threads) if limited else "unchanged",
        "counts": {"md": {f"{temperature_K:g}K": len(frames)}},
        "units": {"energy": "eV", "forces": "eV/Å"},
    }
    return frames, provenance


def _trajectory(n, seed, progress, molecule, temperature_K, burn_in_fs, interval_steps):
    from ase.md.velocitydistribution import ZeroRotation

    from .md import langevin, thermalise

    atoms = build_molecule(molecule)
    atoms.calc = xtb_calculator()
    rng = np.random.default_rng([seed, 3])
    thermalise(atoms, temperature_K, rng)
    ZeroRotation(atoms)
    md = langevin(atoms, TIMESTEP_FS, temperature_K, FRICTION, rng)
    burn_in = int(round(burn_in_fs / TIMESTEP_FS))
    md.run(burn_in)
    frames: List[Atoms] = []
    for k in range(n):
        md.run(interval_steps)
        frame = Atoms(atoms.numbers, positions=atoms.positions)
        frame.info.update(
            generator=NAME, molecule=molecule, config_type="md",
            temperature_K=float(temperature_K), seed=seed, chain=0,
            md_time_fs=(burn_in + (k + 1) * interval_steps) * TIMESTEP_FS,
            calculator=f"tblite {METHOD}")
        frames.append(label(frame, **reference_labels(frame)))
        if progress is not None:
            progress(1)
    return frames

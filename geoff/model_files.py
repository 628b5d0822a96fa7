"""Model files are a trust boundary: what a file is, checked before torch reads it.

geoff writes two kinds of model file, both zip archives (PyTorch's format):

* checkpoints (``.ckpt``, ``geoff.save`` / ``geoff train``): tensors and JSON, read back with
  ``torch.load(weights_only=True)``;
* TorchScript exports (``.pt``, ``geoff export``): read by ``torch.jit.load`` and LAMMPS.

PyTorch checks neither the zip's CRC-32 checksums nor, for a wrong kind of file, says what
the file is (a text file ends with ": 101"; a flipped bit in the weights loads silently). So
before a load, ``check_archive`` opens the file as a zip, verifies every member's checksum
and tells what it holds; errors say what the file is and what to use instead.
"""
from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

CHECKPOINT_HINT = ("a geoff checkpoint is written by `geoff train` or geoff.save(model, path) "
                   "and read by geoff.load(path)")
EXPORT_HINT = "make a LAMMPS model with `geoff export model.ckpt -o model.pt`"

TORCHSCRIPT = "torchscript"
TORCH_SAVE = "torch-save"


def _describe_bytes(head: bytes) -> str:
    """What a non-zip file looks like, from its first bytes."""
    if not head:
        return "an empty file (0 bytes)"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "a Python pickle (geoff never unpickles such files: unpickling can run code)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file that is not a zip archive"
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text[:200]):
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return f"a text file (it begins {first!r})"
    return "a binary file that is not a zip archive"


def check_archive(path, expected: str, hint: str) -> str:
    """Check that ``path`` is an intact PyTorch zip archive; return its kind.

    Returns ``TORCHSCRIPT`` (a ``torch.jit.save`` file) or ``TORCH_SAVE`` (a ``torch.save``
    file). Raises ``IsADirectoryError``/``ValueError``: "``path`` is not a ``expected``: it is
    <what it is>; ``hint``" (what to use instead). Reads the whole file once (CRC-32 of every member).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is not a {expected}: it is a folder; {hint}")
    with open(path, "rb") as fh:
        head = fh.read(256)
    if not zipfile.is_zipfile(path):
        if head[:4] == b"PK\x03\x04":
            raise ValueError(f"{path} is not a {expected}: it is a damaged zip archive "
                             f"(truncated or corrupted: its directory is missing); {hint}, or "
                             "restore an intact copy")
        raise ValueError(f"{path} is not a {expected}: it is {_describe_bytes(head)}; {hint}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            bad = zf.testzip()  # CRC-32 of every member
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError,
            NotImplementedError) as exc:
        raise ValueError(f"{path} is not a {expected}: it is a damaged zip archive ({exc}); "
                         f"{hint}, or restore an intact copy") from None
    if bad is not None:
        raise ValueError(f"{path} is not a {expected}: it is corrupted, member {bad!r} fails "
                         f"its CRC-32 checksum (flipped bits on disk or in transfer); {hint}, or "
                         "restore an intact copy")
    base = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "data.pkl" not in base:
        raise ValueError(f"{path} is not a {expected}: it is a zip archive of other files "
                         f"({sorted(names)[:3]}...), not a PyTorch file; {hint}")
    return TORCHSCRIPT if "constants.pkl" in base or any(b.startswith("code/") for b in base) \
        else TORCH_SAVE


def refused_load_reason(exc: BaseException) -> str:
    """The useful part of a ``weights_only`` refusal, without torch's advice to turn it off."""
    text = str(exc)
    match = re.search(r"Unsupported (global|operand)[^\n.]*", text)
    if match:
        return match.group(0).strip()
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = re.split(r"(?i)in pytorch 2\.6|weights_only", first)[0].strip(" .:")
    return first or type(exc).__name__

"""Checkpoints: ``geoff.save(model, path)`` / ``geoff.load(path)`` (a path, or the name of a
shipped model such as ``"cu-schnet"``).

A checkpoint holds the registry name, hyper-parameters, species, cutoff, force head,
normalisation buffers and weights: plain tensors and JSON text, read back with
``torch.load(weights_only=True)`` so opening one cannot run code. Writes are atomic
(temporary file in the same folder, then ``os.replace``): a crash mid-write leaves the
previous file intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

FORMAT = "geoff-checkpoint"
FORMAT_VERSION = 1


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file owner-only; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def model_state(model) -> Dict[str, Any]:
    """The checkpoint dictionary of an EnergyModel (tensors and a JSON string only)."""
    from . import __version__

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "geoff_version": __version__,
            "config": model.config_json, "state_dict": state}


def save(model, path, extra: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` (an EnergyModel) to ``path`` atomically.

    ``extra`` may hold more tensors/JSON-able values (the trainer stores its state there).
    """
    payload = model_state(model)
    if extra:
        payload["extra"] = extra
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def resolve(path) -> Path:
    """The file that ``path`` names: the path itself, or the checkpoint of a model that ships
    with geoff when ``path`` is such a model's name (``"cu-schnet"``, see ``geoff.models``)
    and no file of that name exists. Errors list the shipped models' names."""
    from . import models

    if Path(path).exists():
        return Path(path)
    if models.is_name(path):
        return models.path(path)
    raise FileNotFoundError(f"no checkpoint at {path} (the models that ship with geoff load by "
                            f"name: {', '.join(models.names()) or 'none'})")


def read(path) -> Dict[str, Any]:
    """The raw checkpoint dictionary, checked; errors say what the file is and what to use.

    ``path``: a checkpoint file or the name of a shipped model (``resolve``). The file is
    checked as a zip archive (CRC-32 of every member) before ``torch.load``
    (``weights_only=True``: it never runs code from the file).
    """
    from .model_files import CHECKPOINT_HINT, TORCHSCRIPT, check_archive, refused_load_reason

    path = resolve(path)
    if check_archive(path, "readable geoff checkpoint", CHECKPOINT_HINT) == TORCHSCRIPT:
        raise ValueError(f"{path} is a TorchScript export (for LAMMPS: `pair_coeff * * {path} "
                         "El ...`, or geoff.export.load_exported), not a geoff checkpoint; "
                         "load the .ckpt it was exported from")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{path} is a PyTorch file but not a geoff checkpoint: a weights-only "
                         f"load refused it ({refused_load_reason(exc)}), so nothing in it ran; "
                         f"{CHECKPOINT_HINT}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is a PyTorch file but not a geoff checkpoint (no '{FORMAT}' "
                         f"marker); {CHECKPOINT_HINT}")
    if not isinstance(payload.get("config"), str) or not isinstance(payload.get("state_dict"),
                                                                     dict):
        raise ValueError(f"{path} is a geoff checkpoint without its config or weights (damaged "
                         f"or hand-edited); {CHECKPOINT_HINT}")
    return payload


def load(path, device="cpu", dtype: Optional[torch.dtype] = None):
    """Rebuild the EnergyModel saved at ``path`` (in eval mode).

    ``path``: a checkpoint file, or the name of a model that ships with geoff
    (``geoff.load("cu-schnet")``; ``geoff models`` lists them)."""
    from .potentials.registry import build_model

    payload = read(path)
    config = json.loads(payload["config"])
    model = build_model(config["name"], species=config["species"], cutoff=config["cutoff"],
                        force_head=config["force_head"],
                        properties=config.get("properties", ()), **config["hparams"])
    state = payload["state_dict"]
    model = model.to(dtype=next(iter(state.values())).dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the {config['name']!r} architecture of this geoff version "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}); re-export or retrain it"
        )
    model.config_json = payload["config"]  # keeps what training added (min_train_distance)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.to(device).eval()

"""Export a model to TorchScript for LAMMPS: ``geoff export model.ckpt -o model.pt``.

The exported file is a ``torch.jit.script`` of the ``EnergyModel`` with its metadata stored
inside the file itself (TorchScript "extra file" ``geoff_metadata.json``), so one file is all
that a LAMMPS deck needs::

    pair_style geoff
    pair_coeff * * model.pt Cu Zr

Metadata keys: ``format`` (``"geoff-torchscript"``), ``format_version``, ``geoff_version``,
``torch_version``, ``model`` (registry name), ``species``, ``cutoff`` (Å), ``n_layers``,
``receptive_hops`` (cutoff spheres an atom's force reaches: ``geoff.inference.receptive_hops``;
since format 2, computed when reading format 1), ``dtype`` (``float32``/``float64``),
``device`` (``cpu``/``cuda``), ``force_head``, ``needs_global_frames`` (true for models that
are not local, i.e. whose representation has ``is_local`` False, e.g. FAENet with global PCA
frames: they cannot be split over MPI ranks), ``properties`` (the per-atom property heads'
names, each an output (N,) of ``forward``; ``[]`` for an energy model; read by ``compute
geoff/atom``) and ``config`` (the checkpoint's JSON config).

Contract with the LAMMPS pair style (``geoff/lammps/plugin/pair_geoff.cpp``): the module's
``forward(graph, compute_forces, compute_stress)`` takes the Graph of ``geoff.graph`` with
``n_local`` set (atoms past it are ghosts), sums energies over local atoms only, and returns
``energy``, ``energies``, ``forces`` and, with ``compute_stress``, ``virial`` (eV).
``n_layers`` must be the number of cutoff spheres in the model's receptive field: the energy
of an atom may depend on edges whose receiver lies at most ``n_layers - 1`` hops away. The
pair style builds its ghost shell (and prunes edges) from ``receptive_hops``, the one number
that the plugin, ``geoff export``'s deck hint and the tests read.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from .inference import DTYPES, dtype_name, frozen, receptive_hops, torch_dtype

# Shared with the C++ plugin (geoff/lammps/plugin/geoff_format.h): "geoff-torchscript",
# version 2 (receptive_hops added), "geoff_metadata.json".
from .lammps.file_format import FORMAT, FORMAT_VERSION, METADATA_FILE  # noqa: E402,F401
REQUIRED_KEYS = ("format", "format_version", "species", "cutoff", "n_layers", "dtype",
                 "model", "geoff_version", "needs_global_frames", "force_head")


def needs_global_frames(model) -> bool:
    """Whether ``model`` sees the whole structure at once (not local: no MPI domains).

    The representation contract's ``is_local`` (``geoff.potentials.representation``), which
    ``EnergyModel`` carries as ``model.is_local``.
    """
    return not bool(model.is_local)


def metadata(model, dtype: str, device: str) -> Dict[str, Any]:
    """The metadata dictionary stored in an exported file."""
    from . import __version__

    for attr in ("species", "cutoff", "n_layers", "is_local"):
        if not hasattr(model, attr):
            raise ValueError(f"cannot export {type(model).__name__}: it has no '{attr}' "
                             "attribute (export geoff EnergyModels or checkpoints)")
    try:
        config = json.loads(getattr(model, "config_json", "{}"))
    except ValueError:
        config = {}
    force_head = str(getattr(model, "force_head", "conservative"))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "geoff_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "model": str(getattr(model, "model_name", "") or config.get("name", "") or
                     type(model).__name__),
        "species": list(model.species),
        "cutoff": float(model.cutoff),
        "n_layers": int(model.n_layers),
        "receptive_hops": receptive_hops(model.n_layers, force_head),
        "dtype": dtype,
        "device": "cuda" if str(device).startswith("cuda") else "cpu",
        "force_head": force_head,
        "needs_global_frames": needs_global_frames(model),
        "properties": list(getattr(model, "properties", [])),
        "config": config,
    }


def per_layer_metadata(model) -> Dict[str, Any]:
    """``layer_comm`` (node-feature names and per-layer widths, or None when the model cannot
    be run layer by layer) and ``layer_comm_refusal`` (why not, or "")."""
    from .lammps.layer_pieces import comm_metadata, per_layer_refusal

    reason = per_layer_refusal(model)
    return {"layer_comm": None if reason else comm_metadata(model),
            "layer_comm_refusal": reason or ""}


def export(model_or_ckpt, path, dtype: str = "float64", device: str = "cpu") -> Path:
    """Script ``model_or_ckpt`` (an EnergyModel or a checkpoint path) and save it to ``path``.

    ``dtype``: ``"float32"`` or ``"float64"``; ``device``: ``"cpu"`` or ``"cuda"`` (the
    device the model's weights live on; LAMMPS then copies positions there). The file is
    written atomically. Returns the path.
    """
    from .checkpoint import atomic_write

    dtype = dtype_name(torch_dtype(dtype))  # checked: "float32" or "float64"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA GPU here "
                         f"(torch {torch.__version__}); export on a GPU machine or use cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if isinstance(model_or_ckpt, torch.nn.Module):
        model = frozen(model_or_ckpt, device, dtype)
    else:
        from .checkpoint import load

        model = frozen(load(model_or_ckpt), device, dtype)
    from .potentials.cueq import restore

    model = restore(model)  # TorchScript runs the e3nn path: undo kernels="cueq" on the copy
    meta = metadata(model, dtype, device)
    meta.update(per_layer_metadata(model))
    if meta["layer_comm"] is not None:  # add the pieces pair_style geoff graph layers calls
        from .lammps.layer_pieces import layered_export

        model = layered_export(model)
    try:
        scripted = torch.jit.script(model)
    except Exception as exc:  # noqa: BLE001 - TorchScript errors come in many types
        raise ValueError(f"cannot compile the {meta['model']!r} model to TorchScript: {exc}") \
            from exc
    extra = {METADATA_FILE: json.dumps(meta, indent=1, sort_keys=True)}
    path = Path(path)
    atomic_write(path, lambda tmp: torch.jit.save(scripted, tmp, _extra_files=extra))
    return path


def property_compute_hint(path, meta: Dict[str, Any]) -> str:
    """The ``compute geoff/atom`` lines for an exported property model (``geoff export``)."""
    names = meta["properties"]
    columns = "c_P" if len(names) == 1 else " ".join(f"c_P[{k + 1}]" for k in range(len(names)))
    shell = meta["n_layers"] * meta["cutoff"] + 2.0
    return (f"per-atom properties {', '.join(names)} during a run (any pair style):\n"
            f"  compute P all geoff/atom {path} {' '.join(meta['species'])}\n"
            f"  dump d all custom 100 props.dump id type x y z {columns}\n"
            f"  comm_modify cutoff {shell:g}   # MPI runs only: >= {meta['n_layers']} x cutoff "
            "+ skin (skin 2.0 Å, metal units default)")


def read_metadata(path) -> Dict[str, Any]:
    """The metadata of an exported file, checked; errors name the problem and the fix."""
    path = Path(path)
    return _check_metadata(path, _load_script(path)[1])


def _load_script(path: Path) -> Tuple[torch.jit.ScriptModule, Any]:
    """(module on the CPU, its raw metadata text) of ``path``; errors name the fix."""
    if not path.exists():
        raise FileNotFoundError(f"no exported model at {path}")
    extra = {METADATA_FILE: ""}
    _check_export_file(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001
        why = str(exc).splitlines()[0].split(". This is an internal miniz error")[0] \
            if str(exc) else ""
        raise ValueError(f"{path} is not a TorchScript file ({exc.__class__.__name__}: {why}); "
                         "make one with `geoff export model.ckpt -o model.pt`") from None
    return module, extra[METADATA_FILE]


def _check_export_file(path: Path) -> None:
    """Raise a ``ValueError`` saying what ``path`` is unless it is an intact TorchScript zip."""
    from .model_files import EXPORT_HINT, TORCH_SAVE, check_archive

    if check_archive(path, "TorchScript file", EXPORT_HINT) == TORCH_SAVE:
        raise ValueError(f"{path} is a torch.save file (a geoff checkpoint?), not a TorchScript "
                         f"export: load it with geoff.load, or {EXPORT_HINT.replace('model.ckpt', str(path))}")


def _check_metadata(path, text) -> Dict[str, Any]:
    if isinstance(text, bytes):
        text = text.decode()
    if not text:
        raise ValueError(f"{path} is a TorchScript file but not a geoff export (no "
                         f"{METADATA_FILE}); make one with `geoff export model.ckpt -o {path}`")
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: its {METADATA_FILE} is not valid JSON ({exc}); "
                         "re-export the model") from None
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if meta.get("format") != FORMAT or missing:
        raise ValueError(f"{path}: metadata is not a {FORMAT} record (missing {missing}); "
                         "re-export the model with `geoff export`")
    if meta["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer geoff ({meta['geoff_version']}, "
                         f"format {meta['format_version']}); upgrade geoff to read it")
    if meta["format_version"] == 1:  # before receptive_hops was stored: the same rule
        meta["receptive_hops"] = receptive_hops(meta["n_layers"], meta["force_head"])
    elif "receptive_hops" not in meta:
        raise ValueError(f"{path}: metadata has no receptive_hops; re-export the model")
    if meta["dtype"] not in DTYPES:
        raise ValueError(f"{path}: metadata dtype {meta['dtype']!r} is not float32/float64")
    species = meta["species"]
    if not isinstance(species, list) or not species or len(set(species)) != len(species):
        raise ValueError(f"{path}: metadata species {species!r} is not a list of distinct "
                         "element symbols; re-export the model")
    if not float(meta["cutoff"]) > 0 or int(meta["n_layers"]) < 1:
        raise ValueError(f"{path}: metadata cutoff {meta['cutoff']} / n_layers "
                         f"{meta['n_layers']} must be positive; re-export the model")
    return meta


def load_exported(path, device=None) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """``(module, metadata)`` of an exported file, metadata checked against the module.

    ``device`` defaults to the device the file was exported for.
    """
    path = Path(path)
    module, text = _load_script(path)
    meta = _check_metadata(path, text)
    # The metadata must describe the module it travels with.
    checks = {"species": list(getattr(module, "species", meta["species"])),
              "cutoff": float(getattr(module, "cutoff", meta["cutoff"])),
              "n_layers": int(getattr(module, "n_layers", meta["n_layers"]))}
    for key, value in checks.items():
        if value != meta[key]:
            raise ValueError(f"{path}: metadata {key}={meta[key]!r} disagrees with the model's "
                             f"{key}={value!r}; the file was edited or is corrupt, re-export it")
    dtypes = {p.dtype for p in module.parameters()}
    if dtypes and dtypes != {DTYPES[meta["dtype"]]}:
        raise ValueError(f"{path}: metadata dtype {meta['dtype']} disagrees with the weights "
                         f"({sorted(str(d) for d in dtypes)}); re-export the model")
    if device is None:
        device = meta["device"]
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{path} was exported for CUDA but torch sees no GPU here; re-export "
                         "with `geoff export --device cpu` or run on a GPU machine")
    return module.to(device), meta


# ---------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint written by `geoff train` / geoff.save")
    parser.add_argument("-o", "--output", required=True, help="TorchScript file to write (.pt)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64",
                        help="precision of the exported model (default: float64)")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda: where LAMMPS runs the model (default: cpu)")


def run(args) -> int:
    path = export(args.checkpoint, args.output, dtype=args.dtype, device=args.device)
    meta = read_metadata(path)
    species = " ".join(meta["species"])
    hops = meta["receptive_hops"]
    shell = hops * meta["cutoff"]
    print(f"wrote {path}: {meta['model']} ({meta['dtype']}, {meta['device']}), species "
          f"{species}, cutoff {meta['cutoff']} Å, {meta['n_layers']} layers")
    print("LAMMPS:\n  pair_style geoff\n"
          f"  pair_coeff * * {path} {species}")
    if meta.get("layer_comm"):
        print("  # MPI runs: per-layer communication (graph layers), no comm_modify needed")
    else:
        print(f"  comm_modify cutoff {shell + 2.0:g}   # MPI runs: >= {hops} x cutoff + skin "
              f"(skin 2.0 Å, metal units default); no per-layer communication: "
              f"{meta.get('layer_comm_refusal') or 'not recorded'}")
    if meta["needs_global_frames"]:
        print("note: this model uses global frames (not local): run it on one MPI rank")
    if meta.get("properties"):
        print(property_compute_hint(path, meta))
    return 0

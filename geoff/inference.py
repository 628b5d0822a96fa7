"""The rules every consumer of a trained model shares, written once.

* ``torch_dtype("float64")``: the one mapping from a dtype name to ``torch.dtype``;
* ``force_key(force_head, forces)``: which output of ``EnergyModel.forward`` holds the
  forces a user asked for (``"conservative"`` or ``"direct"``);
* ``frozen(model, device, dtype)``: a private inference copy (eval mode, no parameter grads),
  so that converting or freezing never touches a model someone is still training;
* ``receptive_hops(n_layers, force_head)``: how many cutoff spheres an atom's energy and force
  reach, which sets the ghost shell of a domain-decomposed run (stored in the export).

The ASE calculator, the MD harness, the stability study, the trainer and the TorchScript export
all call these; none of them spells the rules out again.
"""
from __future__ import annotations

import copy
from typing import Union

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}
FORCE_MODES = ("conservative", "direct")


def torch_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """``"float32"``/``"float64"`` (or a ``torch.dtype`` of those) -> ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float64`` -> ``"float64"`` (the inverse of :func:`torch_dtype`)."""
    return str(torch_dtype(dtype)).replace("torch.", "")


def force_key(force_head: str, forces: str = "conservative") -> str:
    """The key of ``EnergyModel.forward``'s output that holds ``forces``.

    ``force_head`` is the model's (``"conservative"``, ``"direct"``, ``"both"``); ``forces`` is
    what the caller wants. A ``"both"`` model puts its conservative forces in ``"forces"`` and
    its direct head in ``"direct_forces"``; a single-head model uses ``"forces"`` for its head.
    """
    if forces not in FORCE_MODES:
        raise ValueError(f"forces must be one of {FORCE_MODES}, got {forces!r}")
    if forces == "direct":
        if force_head == "conservative":
            raise ValueError("forces='direct' needs a model trained with force_head='direct' "
                             "or 'both'; this one is conservative")
        return "direct_forces" if force_head == "both" else "forces"
    if force_head == "direct":
        raise ValueError("this model has only a direct force head (force_head='direct'); "
                         "use forces='direct'")
    return "forces"


def frozen(model: torch.nn.Module, device="cpu", dtype: Union[str, torch.dtype] = "float32"):
    """A deep copy of ``model`` on ``device`` in ``dtype``, in eval mode, with no grads."""
    model = copy.deepcopy(model).to(device=torch.device(device), dtype=torch_dtype(dtype)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def receptive_hops(n_layers: int, force_head: str) -> int:
    """Cutoff spheres in the receptive field of an atom's force.

    The energy of atom i depends on edges whose receiver is at most ``n_layers - 1`` hops from
    i, so conservative forces reach ``n_layers`` cutoffs; a direct head reads one more
    neighbour shell. A domain-decomposed run without per-layer communication needs ghosts out
    to ``receptive_hops × cutoff + skin``.
    """
    return int(n_layers) + (1 if force_head == "direct" else 0)


def use_radial_tables(model: torch.nn.Module, choice, device, dtype) -> bool:
    """Tabulate the distance-only networks of an inference copy (``frozen``) as ``choice``
    asks, and say whether tables are in use. ``"auto"``: in float32 on the device types the
    representation lists in ``RADIAL_TABLE_AUTO`` (where they were measured to pay, and below
    float32 round-off); ``True`` on a model without tables raises; ``False``: none."""
    from .potentials.radial_table import tabulate_radial

    if choice not in ("auto", True, False):
        raise ValueError(f"radial_table must be 'auto', True or False, got {choice!r}")
    wanted = choice
    if choice == "auto":
        wanted = torch_dtype(dtype) == torch.float32 and torch.device(device).type in getattr(
            getattr(model, "representation", None), "RADIAL_TABLE_AUTO", ())
    used = bool(wanted) and tabulate_radial(model) > 0
    if choice is True and not used:
        raise ValueError(f"radial_table=True: {type(model.representation).__name__} has no "
                         "radial tables (SchNet, NequIP-style and MACE-style have); leave it "
                         "False")
    return used


def use_edge_pairs(model: torch.nn.Module, choice, device) -> bool:
    """Whether graphs for ``model`` get edge pairs (``geoff.graph.add_edge_pairs``).
    ``"auto"``: where pairs were measured to pay: on the CPU for models whose message layers
    read them (``EdgeMessages``), on CUDA for the cuEquivariance kernels (which read each
    edge's weights from its pair's row); building pairs for a model that ignores them is
    waste."""
    from .potentials.chunking import EdgeMessages

    if choice not in ("auto", True, False):
        raise ValueError(f"edge_pairs must be 'auto', True or False, got {choice!r}")
    if choice != "auto":
        return choice
    if torch.device(device).type == "cpu":
        return any(isinstance(m, EdgeMessages) for m in model.modules())
    return any(type(m).__name__ == "CueqConvolution" for m in model.modules())

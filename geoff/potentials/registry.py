"""Model registry: ``build_model(name, species=..., cutoff=..., **hparams)``.

A new architecture is one file in ``geoff/potentials/`` plus one line in ``_REGISTRY``: a
representation class (``representation.py``) built as ``cls(n_species, cutoff=..., **hparams)``.

Shared hyper-parameter names (``SHARED_HPARAMS``), so that configs read the same across
models: every model takes the ones that make sense for it under these names, and a model
names the ones that do not apply, with the reason, in its ``inapplicable_hparams``
(e.g. NequIP: ``correlation``); ``build_model`` gives that reason as the error.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Dict, List, Sequence, Tuple

from .energy_model import EnergyModel

# name -> (module, class). Imported lazily so that e3nn loads only for the models that use it.
_REGISTRY: Dict[str, Tuple[str, str]] = {
    "schnet": ("geoff.potentials.schnet", "SchNet"),
    "dimenet": ("geoff.potentials.dimenet", "DimeNetPP"),
    "painn": ("geoff.potentials.painn", "PaiNN"),
    "egnn": ("geoff.potentials.egnn", "EGNN"),
    "nequip": ("geoff.potentials.nequip", "NequIP"),
    "mace": ("geoff.potentials.mace", "MACE"),
    "faenet": ("geoff.potentials.faenet", "FAENet"),
    "symgnn": ("geoff.potentials.symgnn", "SymGNN"),
    "gemnet": ("geoff.potentials.gemnet", "GemNet"),
}

SHARED_HPARAMS = ("cutoff", "n_layers", "n_features", "n_rbf", "l_max", "correlation",
                  "frames", "n_samples", "force_head")


def available_models() -> List[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def representation_class(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {available_models()}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, species: Sequence[str], cutoff: float = 5.0,
                force_head: str = "conservative", properties: Sequence[str] = (),
                **hparams) -> EnergyModel:
    """An ``EnergyModel`` around the representation registered as ``name``.

    ``hparams`` are passed to the representation (shared names: ``SHARED_HPARAMS``);
    ``properties`` names per-atom scalar heads (``property_model.py``).
    """
    cls = representation_class(name)
    accepted = set(inspect.signature(cls).parameters) - {"n_species"}
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        reasons = getattr(cls, "inapplicable_hparams", {})
        why = "; ".join(f"{key!r} does not apply: {reasons[key]}" for key in unknown
                        if key in reasons)
        raise ValueError(f"bad hyper-parameters for {name!r}: "
                         f"{why or f'unknown {unknown}'}; it takes {sorted(accepted)}")
    try:
        representation = cls(len(species), cutoff=float(cutoff), **hparams)
    except TypeError as exc:  # a value of the wrong type
        raise ValueError(f"bad hyper-parameters for {name!r}: {exc}") from None
    return EnergyModel(representation, list(species), float(cutoff), force_head=force_head,
                       name=name, hparams=hparams, properties=properties)

"""Model registry: ``build_model(name, species=..., cutoff=..., **hparams)``.

A new architecture is one file in ``geoff/potentials/`` plus one line in ``_REGISTRY``: a
callable ``(n_species, cutoff, **hparams) -> representation``.
"""
from __future__ import annotations

import importlib
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


def available_models() -> List[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def representation_class(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {available_models()}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, species: Sequence[str], cutoff: float = 5.0,
                force_head: str = "conservative", **hparams) -> EnergyModel:
    """An ``EnergyModel`` around the representation registered as ``name``.

    ``hparams`` are passed to the representation (shared names: ``n_layers``,
    ``n_features``, ``n_rbf``, ``l_max``, ``correlation``, ``frames``, ``n_samples``).
    """
    cls = representation_class(name)
    try:
        representation = cls(len(species), cutoff=float(cutoff), **hparams)
    except TypeError as exc:
        raise ValueError(f"bad hyper-parameters for {name!r}: {exc}") from None
    return EnergyModel(representation, list(species), float(cutoff), force_head=force_head,
                       name=name, hparams=hparams)

"""Architectures (representations) and the shared EnergyModel."""
from .energy_model import FORCE_HEADS, EnergyModel
from .registry import SHARED_HPARAMS, available_models, build_model
from .representation import LayeredRepresentation, Representation

__all__ = ["EnergyModel", "build_model", "available_models", "FORCE_HEADS", "SHARED_HPARAMS",
           "Representation", "LayeredRepresentation"]

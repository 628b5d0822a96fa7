"""Architectures (representations) and the shared EnergyModel."""
from .energy_model import FORCE_HEADS, EnergyModel
from .registry import available_models, build_model

__all__ = ["EnergyModel", "build_model", "available_models", "FORCE_HEADS"]

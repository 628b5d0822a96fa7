"""ASE calculators."""
from .ase import GeoffCalculator

__all__ = ["GeoffCalculator"]

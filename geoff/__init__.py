"""geoff: geometric graph neural network potentials for molecular dynamics."""
__version__ = "0.1.0"

from .checkpoint import load, save  # noqa: E402

__all__ = ["save", "load", "__version__"]

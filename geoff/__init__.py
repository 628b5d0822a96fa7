"""geoff: geometric graph neural network potentials for molecular dynamics.

``geoff.save(model, path)`` / ``geoff.load(path)``: see ``geoff.checkpoint``; ``path`` may be
the name of a model that ships inside the package (``geoff.load("cu-schnet")``, listed by
``geoff models``). They load lazily so that importing ``geoff`` (as LAMMPS' plugin entry point
does) does not import torch.
"""
# The one version source: pyproject.toml reads it (dynamic), `geoff --version` prints it.
__version__ = "0.1.0"
__all__ = ["save", "load", "__version__"]


def __getattr__(name):
    if name in ("save", "load"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'geoff' has no attribute {name!r}")

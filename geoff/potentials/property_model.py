"""Per-atom property heads: node regression beside the energy head, on the same features.

``build_model(name, species, cutoff, properties=["barrier_mean"])`` gives an ``EnergyModel``
whose output also holds ``out["barrier_mean"]`` (N,): one ``PropertyHead`` per property on
the representation's invariant per-atom scalars ``h_i``::

    p_i = scale[z_i] * mlp(h_i) + shift[z_i]

with a per-element ``shift`` and ``scale`` (in the property's unit, e.g. eV for barriers) set
from the training data (``set_normalisation``), as for the energy. The head reads only the
scalar features, so a property is invariant under exactly the transformations under which
the family's energy is (rotations, reflections, permutations; SymGNN approximately), and it
is saved, loaded and exported with the model (its buffers and weights are in the state dict;
the names in the config). The energy head stays: a property-only model is trained with the
energy and force loss weights at zero (``geoff train --target``), and its energy is then
untrained and meaningless.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor, nn

from .layers import mlp

# Output keys an EnergyModel already uses: a property may not take one of these names.
RESERVED = ("energy", "energies", "forces", "stress", "virial", "direct_forces")


def check_property_names(names: Sequence[str]) -> List[str]:
    """The names as a list, checked: identifiers, distinct, not an energy output key."""
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"property names must be distinct, got {names}")
    for name in names:
        if name in RESERVED or not name.isidentifier():
            raise ValueError(f"{name!r} cannot be a property name: use an identifier other "
                             f"than the energy outputs {RESERVED} (e.g. 'barrier_mean')")
    return names


class PropertyHead(nn.Module):
    """Invariant scalars (N, F) and species (N,) -> one per-atom property (N,)."""

    def __init__(self, n_scalars: int, n_species: int):
        super().__init__()
        self.mlp = mlp([n_scalars, max(n_scalars // 2, 1), 1])
        self.register_buffer("shift", torch.zeros(n_species))
        self.register_buffer("scale", torch.ones(n_species))

    def forward(self, h: Tensor, species: Tensor) -> Tensor:
        return self.mlp(h).squeeze(-1) * self.scale[species] + self.shift[species]  # (N,)

    @torch.jit.unused
    def set_normalisation(self, shift, scale) -> None:
        """Per-element shift and scale (one per species, the property's unit)."""
        n = self.shift.numel()
        sh = torch.as_tensor(shift, dtype=self.shift.dtype).reshape(-1)
        sc = torch.as_tensor(scale, dtype=self.scale.dtype).reshape(-1)
        if sh.numel() != n or sc.numel() != n:
            raise ValueError(f"need one shift and one scale per species ({n}), got "
                             f"{sh.numel()} and {sc.numel()}")
        if not bool((sc > 0).all()):
            raise ValueError(f"property scales must be positive, got {sc.tolist()}")
        self.shift.copy_(sh)
        self.scale.copy_(sc)


def property_heads(names: Sequence[str], n_scalars: int, n_species: int) -> nn.ModuleDict:
    """One ``PropertyHead`` per name (an empty ModuleDict for a plain energy model)."""
    return nn.ModuleDict({name: PropertyHead(n_scalars, n_species)
                          for name in check_property_names(names)})

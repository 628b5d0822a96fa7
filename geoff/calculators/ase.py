"""GeoffCalculator: an ASE calculator around an EnergyModel (or a saved checkpoint)."""
from __future__ import annotations

import copy

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ..graph import atoms_to_graph

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class GeoffCalculator(Calculator):
    """ASE calculator for geoff models.

    Args:
        model: an ``EnergyModel`` or the path of a checkpoint written by ``geoff.save``.
        device: ``"cpu"``, ``"cuda"``, ...
        dtype: ``"float32"`` (fast) or ``"float64"`` (what tests use).
        forces: for ``force_head="both"`` models, which forces to report:
            ``"conservative"`` (default) or ``"direct"``.
        check_overlaps: raise a ``ValueError`` naming two atoms closer than the model's
            overlap threshold (``geoff.structure_checks``); ``False`` turns the check off.

    Properties: ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å^3,
    Voigt order xx yy zz yz xz xy, 3D-periodic cells only) and ``energies`` (eV per atom).
    Results are recomputed only when the atoms change (ASE's ``check_state``).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model, device: str = "cpu", dtype: str = "float32",
                 forces: str = "conservative", check_overlaps: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.min_distance = None if check_overlaps else 0.0  # None: the model's threshold
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if forces not in ("conservative", "direct"):
            raise ValueError(f"forces must be 'conservative' or 'direct', got {forces!r}")
        if not isinstance(model, torch.nn.Module):
            from ..checkpoint import load

            model = load(model)
        self.device = torch.device(device)
        self.dtype = _DTYPES[dtype]
        # A private copy: converting or freezing must not touch a model the user still trains.
        self.model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.force_key = "direct_forces" if (forces == "direct" and model.force_head == "both") \
            else "forces"
        if forces == "direct" and model.force_head == "conservative":
            raise ValueError("forces='direct' needs a model trained with force_head='direct' "
                             "or 'both'; this one is conservative")

    @property
    def species(self):
        return self.model.species

    def graph(self, atoms):
        return atoms_to_graph(atoms, self.model, dtype=self.dtype, device=self.device,
                              min_distance=self.min_distance)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties
        if want_stress and not np.all(atoms.pbc):
            raise PropertyNotImplementedError(
                f"stress needs a 3D-periodic cell, but pbc = {atoms.pbc.tolist()}; "
                "set pbc=True with a cell, or ask only for energy and forces"
            )
        # direct forces of a "both" model need no backward pass (compute_forces=False)
        out = self.model(self.graph(atoms), compute_forces=self.force_key == "forces",
                         compute_stress=want_stress)
        energy = float(out["energy"].detach().sum())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = out["energies"].detach().cpu().double().numpy()
        self.results["forces"] = out[self.force_key].detach().cpu().double().numpy()
        if want_stress:
            stress = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)

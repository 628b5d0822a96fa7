"""nequip 0.19.1 at geoff's matched NequIP hyper-parameters: 64 features, l_max 2, 3 layers,
cutoff 5 Å, 8 Bessel functions, random weights (``NequIPGNNModel(seed=0)``, untrained).

``spec["compile"]``: ``"eager"`` or ``"compile"`` (nequip's ``compile_mode="compile"``:
its ``CompileGraphModel``, torch.compile of the model's graph; but it runs the eager model
for a batch of fewer than 2 frames, so ``speed.py`` lists that row as not run; its
AOTInductor export, ``nequip-compile --mode aotinductor``, needs a saved package). Neighbour list: nequip's
``NeighborListTransform`` (matscipy backend, its default), as ``NequIPCalculator`` builds it.
"""
from __future__ import annotations


def prepare(spec: dict):
    """(model call on a prepared graph, NequIPCalculator call, atoms, edges)."""
    import torch
    from nequip.data import AtomicDataDict
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.integrations.ase import NequIPCalculator
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    from speed import CUTOFF, structure

    set_global_state()  # nequip's defaults (TF32 off), required before building a model
    species = ["Cu", "Zr"]
    model = NequIPGNNModel(
        seed=0, model_dtype=spec["dtype"], r_max=CUTOFF, type_names=species, num_layers=3,
        l_max=2, num_features=64, num_bessels=8, avg_num_neighbors=42.0,
        per_type_energy_scales=1.0, per_type_energy_shifts=0.0,
        compile_mode=spec.get("compile", "eager"))
    model.eval()
    identity = {s: s for s in species}
    transforms = [ChemicalSpeciesToAtomTypeMapper(model_type_names=species,
                                                  chemical_species_to_atom_type_map=identity),
                  NeighborListTransform(r_max=CUTOFF)]
    calc = NequIPCalculator(model, device=spec["device"], transforms=transforms)
    atoms = structure(spec["kind"], spec["n"])
    graph = calc.atoms_to_data(atoms)

    def model_call():
        calc.model(dict(graph))[AtomicDataDict.FORCE_KEY].sum().item()

    def calc_call():
        calc.calculate(atoms, ["energy", "forces"], ["positions"])

    return model_call, calc_call, len(atoms), int(graph[AtomicDataDict.EDGE_INDEX_KEY].shape[1])

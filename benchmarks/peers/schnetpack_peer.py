"""schnetpack's SchNet and PaiNN at geoff's matched hyper-parameters: 128 features,
3 interactions, cutoff 5 Å (cosine cutoff, 20 Gaussians), random weights, energy + forces
(``Atomwise`` + ``Forces``). Neighbour list: schnetpack's ``MatScipyNeighborList``
transform, for the prepared batch (``AtomsConverter``) and for ``SpkCalculator`` alike.
"""
from __future__ import annotations


def spk_model(name: str):
    import schnetpack as spk
    import torch

    from speed import CUTOFF

    torch.manual_seed(0)
    radial = spk.nn.GaussianRBF(n_rbf=20, cutoff=CUTOFF)
    cutoff_fn = spk.nn.CosineCutoff(CUTOFF)
    representation = {"schnet": spk.representation.SchNet,
                      "painn": spk.representation.PaiNN}[name](
        n_atom_basis=128, n_interactions=3, radial_basis=radial, cutoff_fn=cutoff_fn)
    return spk.model.NeuralNetworkPotential(
        representation=representation, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=128, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")])


def prepare(spec: dict):
    """(model call on a prepared batch, SpkCalculator call, atoms, edges)."""
    import schnetpack.transform as trn
    import torch
    from schnetpack import properties
    from schnetpack.interfaces import AtomsConverter, SpkCalculator

    from speed import CUTOFF, structure

    dtype = getattr(torch, spec["dtype"])
    dev = torch.device(spec["device"])
    model = spk_model(spec["model"]).to(dtype).to(dev).eval()
    atoms = structure(spec["kind"], spec["n"])
    converter = AtomsConverter(neighbor_list=trn.MatScipyNeighborList(cutoff=CUTOFF),
                               device=dev, dtype=dtype)
    batch = converter(atoms)
    calc = SpkCalculator(model, neighbor_list=trn.MatScipyNeighborList(cutoff=CUTOFF),
                         energy_unit="eV", position_unit="Ang", device=dev, dtype=dtype)

    def model_call():
        model({k: v.clone() for k, v in batch.items()})["forces"].sum().item()

    def calc_call():
        calc.atoms = None  # SpkCalculator skips the call for atoms it has already seen
        calc.calculate(atoms, ["energy", "forces"], ["positions"])

    return model_call, calc_call, len(atoms), int(batch[properties.idx_i].shape[0])

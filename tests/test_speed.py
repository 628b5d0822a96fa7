"""Speed levers that must not move results: the float64 energy sum of float32 models."""
import torch
from ase.build import bulk

from conftest import small_model
from geoff.graph import atoms_to_graph


def test_float32_model_sums_energies_in_float64():
    model = small_model("schnet", species=["Cu"]).float()
    model.set_normalisation([-3.7], 1.0)  # realistic magnitudes: round-off grows with |E|
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (10, 10, 10)  # 4000 atoms
    atoms.rattle(0.05, seed=0)
    graph = atoms_to_graph(atoms, model, dtype=torch.float32)
    with torch.no_grad():
        out = model(graph, compute_forces=False)
    exact = out["energies"].double().sum()
    assert out["energy"].dtype == torch.float32
    assert out["energy"][0] == exact.float()  # the float64 sum, rounded once
    naive = torch.zeros(1, dtype=torch.float32).index_add_(0, graph["batch"], out["energies"])[0]
    assert abs(float(out["energy"][0]) - float(exact)) <= abs(float(naive) - float(exact))

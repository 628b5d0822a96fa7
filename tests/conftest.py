import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

torch.set_default_dtype(torch.float64)

# Small, fast hyper-parameters per registered model for the tests (defaults are bigger).
SMALL = {
    "schnet": dict(n_features=16, n_layers=2, n_rbf=12),
    "dimenet": dict(n_features=16, n_layers=2, n_rbf=6, l_max=3, n_triplet_features=8,
                    n_basis_features=4, n_output_features=16, n_output_layers=1),
    "painn": dict(n_features=16, n_layers=2, n_rbf=8),
    "egnn": dict(n_features=16, n_layers=2, n_rbf=16, n_vector_channels=2),
    "nequip": dict(n_features=8, n_layers=2, l_max=2, n_rbf=6, radial_hidden=16),
    "mace": dict(n_features=8, n_layers=2, l_max=2, correlation=3, n_rbf=6, radial_hidden=16,
                 radial_layers=2),
    # faenet: local frames (the class default), degeneracy gates on (default gap_scale).
    "faenet": dict(n_features=16, n_layers=2, n_rbf=8, n_vectors=2),
    "symgnn": dict(n_features=16, n_layers=2, n_rbf=8, n_vectors=2, n_samples=4),
    "gemnet": dict(n_features=16, n_layers=2, n_rbf=6, l_max=3, n_triplet_features=8,
                   n_quadruplet_features=8, n_basis_features=4, n_output_features=16,
                   n_output_layers=1, l_max_quadruplet=2),
}
# Variants of registered models that the parametrised tests run as models of their own:
# name -> (registry name, extra hyper-parameters). GemNet-Q at a 3 Å quadruplet cutoff: the
# test structures' nearest neighbours (2.6 Å) form quadruplets, which cutoff / 2 would not.
VARIANTS = {
    "gemnet-q": ("gemnet", dict(quadruplets=True, quadruplet_cutoff=3.0)),
}


def small_model(name, species=("Cu", "Zr"), cutoff=4.0, force_head="conservative", **extra):
    from geoff.potentials import build_model

    torch.manual_seed(0)
    name, variant = VARIANTS.get(name, (name, {}))
    hp = dict(SMALL.get(name, {}))
    hp.update(variant)
    hp.update(extra)
    model = build_model(name, species=list(species), cutoff=cutoff, force_head=force_head, **hp)
    model = model.double().eval()
    # Non-trivial normalisation so that tests see the shift and scale at work.
    model.set_normalisation(torch.linspace(-3.0, -1.0, len(species)), torch.linspace(0.5, 1.5, len(species)))
    return model


def rattled_triclinic(seed=0, n=(2, 2, 2)):
    """A rattled, sheared Cu/Zr cell (periodic, triclinic)."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.7) * n
    cell = atoms.cell.array.copy()
    cell[2] += [0.4, -0.3, 0.0]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    symbols = atoms.get_chemical_symbols()
    symbols[1] = "Zr"
    symbols[3] = "Zr"
    atoms.set_chemical_symbols(symbols)
    return atoms


def cluster(seed=0, n=10):
    """A non-periodic cluster of Cu/Zr atoms at physical distances."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    atoms = atoms[:n]
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.symbols[0] = "Zr"
    return atoms


def tiny_cu_study(name, models, ensembles, seeds=(0, 1), **changes):
    """A study config on the 8-atom fcc Cu cell (1 x 1 x 2 cubic), 1 fs, logged every 2
    steps: the replica/study tests' shared set-up; ``changes`` replace top-level keys."""
    config = {
        "name": name, "models": models,
        "systems": [{"name": "cu8", "structure": {"bulk": "Cu", "crystalstructure": "fcc",
                                                  "a": 3.61, "cubic": True,
                                                  "repeat": [1, 1, 2]}}],
        "ensembles": ensembles, "timesteps_fs": [1.0], "seeds": list(seeds),
        "md": {"log_every": 2, "traj_every": 2},
        "failure": {"min_distance_factor": None}, "analysis": {"jacobian_structures": 1},
    }
    config.update(changes)
    return config


@pytest.fixture
def triclinic():
    return rattled_triclinic()


@pytest.fixture(scope="module")
def one_thread():
    """Small graphs: one torch thread is faster, and the only fair one on a shared machine.
    Modules that want it: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cuda_syncs(fn):
    """(fn(), how many times it synchronised the host with the current CUDA stream)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings():  # the mode's own "prototype feature" notice (once a process)
        warnings.simplefilter("ignore")
        torch.cuda.set_sync_debug_mode("warn")
        torch.cuda.set_sync_debug_mode("default")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out, sum("called a synchronizing" in str(w.message) for w in caught)


def verlet_run(atoms, calc, steps=5, timestep=2.0, seed=0):
    """``steps`` velocity-Verlet steps of ``atoms`` (random momenta) with ``calc``:
    (energies after each step, final forces)."""
    from ase.md.verlet import VelocityVerlet

    atoms.set_momenta(np.random.default_rng(seed).normal(0, 3.0, (len(atoms), 3)))
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=timestep)
    energies = []
    for _ in range(steps):
        dyn.run(1)
        energies.append(atoms.get_potential_energy())
    return np.array(energies), atoms.get_forces()

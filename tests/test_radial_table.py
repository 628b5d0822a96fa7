"""Radial tables (``geoff/potentials/radial_table.py``): SchNet's filters and the NequIP- and
MACE-style radial MLPs read from a table.

The table is an approximation of the filter networks, so the checks are: the interpolant
itself (values and slopes against a function with a known derivative), forces that are the
exact gradient of the tabulated energy (finite differences), agreement with the networks
(float64 ~1e-8; float32 no worse than the networks' own float32 error), and every path that
must keep the networks (training, edge masks) or give the same numbers (chunks, edge pairs,
TorchScript, the calculator).
"""
import math

import numpy as np
import pytest
import torch
from conftest import rattled_triclinic, small_model

from geoff.calculators.ase import GeoffCalculator
from geoff.graph import add_edge_pairs, atoms_to_graph
from geoff.potentials.chunking import set_edge_chunk
from geoff.potentials.radial_table import RadialTable, _Lookup, horner, tabulate_radial

pytestmark = pytest.mark.usefixtures("one_thread")
TABULATED = ["schnet", "nequip", "mace"]  # the representations with tables


def _wave(r):
    return torch.stack([torch.sin(3 * r), torch.exp(-r) * r * r], dim=1)


def _wave_slope(r):
    return torch.stack([3 * torch.cos(3 * r), torch.exp(-r) * (2 * r - r * r)], dim=1)


def test_table_values_and_slopes():
    table = RadialTable(_wave, 0.5, 5.0, n_points=2048, dtype=torch.float64)
    r = torch.linspace(0.5, 5.0, 997, dtype=torch.float64)[1:-1].requires_grad_(True)
    y = table(r)
    torch.testing.assert_close(y, _wave(r.detach()), rtol=0, atol=1e-10)
    slope = torch.stack([torch.autograd.grad(y[:, c].sum(), r, retain_graph=True)[0]
                         for c in range(2)], dim=1)
    torch.testing.assert_close(slope, _wave_slope(r.detach()), rtol=0, atol=1e-6)
    outside = table(torch.tensor([0.0, 7.0], dtype=torch.float64))  # held end values
    torch.testing.assert_close(outside, _wave(torch.tensor([0.5, 5.0], dtype=torch.float64)))
    with pytest.raises(ValueError, match="n_points >= 2"):
        RadialTable(_wave, 1.0, 1.0)


def _tabulated(name="schnet", **extra):
    model = small_model(name, **extra)
    assert tabulate_radial(model) == 1
    return model


def test_regathering_backward_equals_autograd():
    """``_Lookup`` (the CUDA backward: gather again instead of keeping the rows) gives the
    same values and slopes as autograd through ``horner``; here on the CPU, on CUDA below."""
    table = RadialTable(_wave, 0.5, 5.0, n_points=64, dtype=torch.float64)
    r = torch.linspace(0.3, 5.5, 301, dtype=torch.float64)
    t = torch.clamp((r - table.r_min) * table.inv_h, 0.0, table.last + 1.0)
    k = torch.clamp(t.floor().long(), 0, table.last)
    u = (t - k).unsqueeze(-1).requires_grad_(True)
    weights = torch.randn(301, 2, dtype=torch.float64)
    plain = horner(table.coefficients, k, u, table.width)
    (slope_plain,) = torch.autograd.grad((plain * weights).sum(), u)
    mine = _Lookup.apply(u, k, table.coefficients, table.width)
    (slope_mine,) = torch.autograd.grad((mine * weights).sum(), u)
    torch.testing.assert_close(mine, plain, rtol=0, atol=0)
    torch.testing.assert_close(slope_mine, slope_plain, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", TABULATED)
def test_forces_are_the_gradient_of_the_tabulated_energy(name):
    model = _tabulated(name)
    atoms = rattled_triclinic()
    graph = atoms_to_graph(atoms, model, dtype=torch.float64)
    forces = model(graph)["forces"]
    eps = 1e-5
    for atom, axis in [(0, 0), (3, 1), (5, 2)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * eps
            out = model(atoms_to_graph(moved, model, dtype=torch.float64))
            energies.append(float(out["energy"].detach().sum()))
        numeric = -(energies[0] - energies[1]) / (2 * eps)
        assert math.isclose(float(forces[atom, axis]), numeric, rel_tol=1e-6, abs_tol=1e-8)


@pytest.mark.parametrize("name", TABULATED)
def test_tabulated_model_agrees_with_the_networks(name):
    atoms = rattled_triclinic()
    exact = small_model(name)
    graph64 = atoms_to_graph(atoms, exact, dtype=torch.float64)
    ref = exact(graph64, compute_stress=True)
    out = _tabulated(name)(graph64, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        scale = float(ref[key].detach().abs().max())
        assert float((out[key] - ref[key]).detach().abs().max()) <= 1e-7 * scale, key
    # float32: the table's error is no worse than the float32 networks' own
    net32 = small_model(name).float()
    graph32 = atoms_to_graph(atoms, net32, dtype=torch.float32)
    own = float((net32(graph32)["forces"].double() - ref["forces"]).abs().max())
    tab32 = _tabulated(name).float()
    tabulate_radial(tab32)  # the table in the model's new dtype
    err = float((tab32(graph32)["forces"].double() - ref["forces"]).abs().max())
    assert err <= 2 * own + 1e-7 * float(ref["forces"].abs().max()), (err, own)


@pytest.mark.parametrize("name", TABULATED)
def test_paths_that_keep_or_share_the_table(name):
    model = _tabulated(name)
    graph = atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64)
    plain = model(graph)["forces"]
    torch.testing.assert_close(model(add_edge_pairs(graph))["forces"], plain)
    torch.testing.assert_close(set_edge_chunk(model, 97)(graph)["forces"], plain)
    set_edge_chunk(model, 0)
    torch.testing.assert_close(torch.jit.script(model)(graph)["forces"], plain)
    network = small_model(name)
    exact = dict(rtol=1e-12, atol=1e-14)
    # edge masks: SchNet's gates its filters' envelope, so it runs the networks; the
    # spherical models gate Y and keep the table
    ones = torch.ones(graph["edge_index"].shape[1], dtype=torch.float64)
    masked = model({**graph, "edge_mask": ones})["forces"]
    torch.testing.assert_close(masked, network(graph)["forces"] if name == "schnet" else plain,
                               **exact)
    model.train()  # training mode runs the networks (exactly the untabulated numbers)
    torch.testing.assert_close(model(graph)["forces"], network(graph)["forces"], **exact)
    model.eval()
    assert float((model(graph)["forces"] - network(graph)["forces"]).abs().max()) > 0
    model.representation.untabulate()
    torch.testing.assert_close(model(graph)["forces"], network(graph)["forces"], **exact)


def test_calculator_radial_table_option():
    atoms = rattled_triclinic()
    results = []
    for table in (False, True):
        atoms.calc = GeoffCalculator(small_model("schnet"), dtype="float64", radial_table=table)
        results.append(atoms.get_forces())
    np.testing.assert_allclose(results[1], results[0], rtol=0,
                               atol=1e-7 * np.abs(results[0]).max())
    with pytest.raises(ValueError, match="radial_table=True"):
        GeoffCalculator(small_model("painn"), radial_table=True)
    with pytest.raises(ValueError, match="radial_table must be"):
        GeoffCalculator(small_model("schnet"), radial_table="yes")
    # "auto": on for float32 on the CPU, off in float64 and for models without tables
    assert GeoffCalculator(small_model("schnet"), dtype="float32").radial_table
    assert not GeoffCalculator(small_model("schnet"), dtype="float64").radial_table
    assert not GeoffCalculator(small_model("painn"), dtype="float32").radial_table
    # the spherical models tabulate when asked; "auto" leaves them alone on the CPU
    assert not GeoffCalculator(small_model("mace"), dtype="float32").radial_table
    assert GeoffCalculator(small_model("mace"), dtype="float32", radial_table=True).radial_table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", TABULATED)
def test_gpu_table_regathers_and_agrees(name):
    """On CUDA the table's backward gathers again (``_Lookup``): same forces as the CPU's
    autograd path, and as the networks to the table's accuracy."""
    atoms = rattled_triclinic()
    ref = small_model(name)
    graph = atoms_to_graph(atoms, ref, dtype=torch.float64)
    exact = ref(graph)["forces"]
    cpu = _tabulated(name)(graph)["forces"]
    moved = _tabulated(name).to("cuda")  # the tables move with the model
    on_gpu = small_model(name).to("cuda")
    assert tabulate_radial(on_gpu) == 1  # sampled on the CPU, stored on the GPU
    for gpu_model in (moved, on_gpu):
        gpu = gpu_model(atoms_to_graph(atoms, gpu_model, dtype=torch.float64, device="cuda"))
        torch.testing.assert_close(gpu["forces"].cpu(), cpu, rtol=1e-10, atol=1e-12)
        scale = float(exact.abs().max())
        assert float((gpu["forces"].cpu() - exact).abs().max()) <= 1e-7 * scale

"""Radial tables (``geoff/potentials/radial_table.py``): SchNet's filters read from a table.

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
from geoff.potentials.radial_table import RadialTable, tabulate_radial

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_forces_are_the_gradient_of_the_tabulated_energy():
    model = _tabulated()
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


def test_tabulated_schnet_agrees_with_the_networks():
    atoms = rattled_triclinic()
    exact = small_model("schnet")
    graph64 = atoms_to_graph(atoms, exact, dtype=torch.float64)
    ref = exact(graph64, compute_stress=True)
    out = _tabulated()(graph64, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        scale = float(ref[key].abs().max())
        assert float((out[key] - ref[key]).abs().max()) <= 1e-7 * scale, key
    # float32: the table's error is no worse than the float32 networks' own
    net32 = small_model("schnet").float()
    graph32 = atoms_to_graph(atoms, net32, dtype=torch.float32)
    own = float((net32(graph32)["forces"].double() - ref["forces"]).abs().max())
    tab32 = _tabulated().float()
    tabulate_radial(tab32)  # the table in the model's new dtype
    err = float((tab32(graph32)["forces"].double() - ref["forces"]).abs().max())
    assert err <= 2 * own + 1e-7 * float(ref["forces"].abs().max()), (err, own)


def test_paths_that_keep_or_share_the_table():
    model = _tabulated()
    graph = atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64)
    plain = model(graph)["forces"]
    torch.testing.assert_close(model(add_edge_pairs(graph))["forces"], plain)
    torch.testing.assert_close(set_edge_chunk(model, 97)(graph)["forces"], plain)
    set_edge_chunk(model, 0)
    torch.testing.assert_close(torch.jit.script(model)(graph)["forces"], plain)
    # training mode and edge masks run the networks (exactly the untabulated numbers)
    network = small_model("schnet")
    ones = torch.ones(graph["edge_index"].shape[1], dtype=torch.float64)
    torch.testing.assert_close(model({**graph, "edge_mask": ones})["forces"],
                               network(graph)["forces"], rtol=1e-12, atol=1e-14)
    model.train()
    torch.testing.assert_close(model(graph)["forces"], network(graph)["forces"],
                               rtol=1e-12, atol=1e-14)
    model.eval()
    model.representation.untabulate()
    torch.testing.assert_close(model(graph)["forces"], network(graph)["forces"],
                               rtol=1e-12, atol=1e-14)


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

"""The CPU speed levers of issue 12 against the plain formulas they replace (float64).

* MACE's ``_Coupling`` evaluated per distinct (input row, output row) pair, against the plain
  sparse table of non-zero Clebsch-Gordan coefficients that ``cueq.py`` still reads;
* PaiNN's layer 0 skipping the neighbour-vector term, against the full message on zero vectors;
* ``scatter_sum`` of a strided slice, against the sum of a contiguous copy.
"""
import torch

from conftest import rattled_triclinic, small_model
from geoff.graph import atoms_to_graph
from geoff.potentials.layers import scatter_sum
from geoff.potentials.mace import _Coupling


def plain_table(coupling: _Coupling, p, a):
    """out[g] = sum c * p[i] * a[j] over the non-zeros (i, j, g, c), one row at a time."""
    out = torch.zeros((coupling.d_out,) + p.shape[1:], dtype=p.dtype)
    c = coupling.coefficients.reshape(-1)
    for i, j, g, k in zip(coupling.i_in.tolist(), coupling.i_factor.tolist(),
                          coupling.i_out.tolist(), range(c.numel())):
        out[g] += c[k] * p[i] * a[j]
    return out


def test_mace_coupling_pairs_equal_the_plain_table():
    model = small_model("mace", correlation=3)
    couplings = [(name, m) for name, m in model.named_modules() if isinstance(m, _Coupling)]
    assert couplings, "the MACE-style model has no _Coupling level"
    torch.manual_seed(1)
    for name, coupling in couplings:
        d_in = int(coupling.k_in.max()) + 1
        d_a = coupling.pair_matrix.shape[1]
        if not name.endswith("contract_scalars"):  # 0e only: one output row, pairs = non-zeros
            assert coupling.k_in.numel() < coupling.i_in.numel()  # fewer pairs than non-zeros
        p = torch.randn(d_in, 5, 3, dtype=torch.float64, requires_grad=True)
        a = torch.randn(d_a, 5, 3, dtype=torch.float64, requires_grad=True)
        fast, ref = coupling(p, a), plain_table(coupling, p, a)
        assert torch.allclose(fast, ref, rtol=1e-12, atol=1e-12)
        w = torch.randn_like(ref)
        g_fast = torch.autograd.grad((fast * w).sum(), [p, a])
        g_ref = torch.autograd.grad((ref * w).sum(), [p, a])
        for x, y in zip(g_fast, g_ref):
            assert torch.allclose(x, y, rtol=1e-12, atol=1e-12)


def test_painn_layer_zero_skip_equals_full_message_on_zero_vectors():
    model = small_model("painn")
    rep = model.representation
    graph = atoms_to_graph(rattled_triclinic(), model)
    pos, edge_index = graph["positions"], graph["edge_index"]
    edge_vec = (pos[edge_index[1]] - pos[edge_index[0]] + graph["shifts"]).requires_grad_(True)
    state, geometry = rep.embed(graph, edge_vec)
    assert float(state["v"].abs().max()) == 0.0  # what the skip relies on
    args = (state["s"], state["v"], geometry["edge_index"], geometry["rbf"],
            geometry["envelope"], geometry["unit"])
    message = rep.layers[0].message
    s_skip, v_skip = message(*args, v_is_zero=True)
    s_full, v_full = message(*args, v_is_zero=False)
    assert torch.equal(s_skip, s_full) and torch.allclose(v_skip, v_full, rtol=0, atol=1e-14)
    assert float(v_full.detach().abs().max()) > 0.0
    w = torch.randn_like(v_full)
    g_skip = torch.autograd.grad((v_skip * w).sum() + s_skip.sum(), edge_vec, retain_graph=True)[0]
    g_full = torch.autograd.grad((v_full * w).sum() + s_full.sum(), edge_vec)[0]
    assert torch.allclose(g_skip, g_full, rtol=1e-12, atol=1e-14)


def test_scatter_sum_of_a_strided_slice():
    torch.manual_seed(2)
    wide = torch.randn(40, 12, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 7, (40,))
    part = wide[:, 4:8]  # a strided view, as torch.split of wider messages gives
    assert not part.is_contiguous()
    out = scatter_sum(part, index, 7)
    ref = torch.zeros(7, 4, dtype=torch.float64).index_add_(0, index, part.detach().clone())
    assert torch.allclose(out, ref, rtol=1e-14, atol=1e-14)
    grad = torch.autograd.grad(out.sum(), wide)[0]
    assert torch.equal(grad[:, 4:8], torch.ones(40, 4, dtype=torch.float64))
    assert float(grad[:, :4].abs().max()) == 0.0

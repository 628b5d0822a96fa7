"""cuEquivariance kernels (``geoff/potentials/cueq.py``) give the e3nn path's numbers.

Skipped where cuequivariance is not installed (CI), except the error a user gets when they
ask for ``kernels="cueq"`` without it. On the CPU cuEquivariance's pure-torch ("naive")
evaluation runs the same polynomials the GPU kernels run, so float64 equality to 1e-10
checks the descriptors built from geoff's coupling tables; the GPU tests (skipped without
CUDA) compare the fused ``uniform_1d`` kernels with the e3nn path.
"""
import sys

import pytest
import torch
from conftest import rattled_triclinic, small_model

from geoff.calculators.ase import GeoffCalculator
from geoff.graph import add_edge_pairs, atoms_to_graph
from geoff.potentials import cueq
from geoff.potentials.radial_table import tabulate_radial
from geoff.potentials.chunking import set_edge_chunk
from geoff.potentials.e3nn_tools import Convolution
from geoff.potentials.mace import SymmetricContraction

pytestmark = pytest.mark.usefixtures("one_thread")
MODELS = ["nequip", "mace"]
KEYS = ("energy", "energies", "forces", "stress")


def _close(a, b, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def test_cueq_missing_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuequivariance", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"geoff\[cuda\]"):
        cueq.accelerate(small_model("nequip"))
    assert not cueq.available()
    model = small_model("nequip")
    assert cueq.with_kernels(model, "auto", "cpu") is model  # auto: the e3nn path, no error
    assert any(type(m) is Convolution for m in model.modules())


def test_kernels_option_is_checked():
    with pytest.raises(ValueError, match="kernels must be one of"):
        cueq.with_kernels(small_model("nequip"), "triton", "cpu")


needs_cueq = pytest.mark.skipif(not cueq.installed(), reason="cuequivariance not installed")


@pytest.fixture(scope="module")
def accelerated():
    """{name: (e3nn model, cuEq model sharing its parameters, graph)}: built once (slow)."""
    out = {}
    for name in MODELS:
        model = small_model(name)
        graph = atoms_to_graph(rattled_triclinic(), model, dtype=torch.float64)
        e3nn_model = small_model(name)
        fast = cueq.accelerate(model, method="naive")
        out[name] = (e3nn_model, fast, graph)
    return out


@needs_cueq
@pytest.mark.parametrize("name", MODELS)
def test_cueq_equals_e3nn_float64(accelerated, name):
    reference, fast, graph = accelerated[name]
    kinds = {type(m).__name__ for m in fast.modules()}
    assert "CueqConvolution" in kinds and "Convolution" not in kinds
    assert (name == "mace") == ("CueqSymmetricContraction" in kinds)
    ref = reference(graph, compute_stress=True)
    for chunk in (0, 37):  # the plain path and many checkpointed chunks
        for g in (graph, add_edge_pairs(graph)):  # per edge, and radial weights per pair
            out = set_edge_chunk(fast, chunk)(g, compute_stress=True)
            for key in KEYS:
                _close(out[key], ref[key])
    assert ref["forces"].abs().max() > 1e-6 and ref["stress"].abs().max() > 1e-7


@needs_cueq
@pytest.mark.parametrize("name", MODELS)
def test_cueq_keeps_parameters_and_checkpoint(accelerated, name, tmp_path):
    from geoff.checkpoint import load, save

    reference, fast, graph = accelerated[name]
    ref_state, state = reference.state_dict(), fast.state_dict()
    assert list(state) == list(ref_state)  # same keys: checkpoints do not change
    for key in state:
        _close(state[key], ref_state[key], rtol=0, atol=0)
    save(fast, tmp_path / "fast.ckpt")  # loads as a plain e3nn-path model
    loaded = load(tmp_path / "fast.ckpt").double()
    assert not any(type(m).__name__.startswith("Cueq") for m in loaded.modules())
    _close(loaded(graph)["forces"], reference(graph)["forces"])
    # shared, not copied: a change to a parameter reaches the kernel path
    params = dict(fast.named_parameters())
    conv_w = next(k for k in params if k.endswith("linear_out.weight"))
    before = fast(graph)["energy"]
    with torch.no_grad():
        params[conv_w].mul_(1.5)
    try:
        assert not torch.allclose(fast(graph)["energy"], before)
    finally:
        with torch.no_grad():
            params[conv_w].div_(1.5)


@needs_cueq
def test_cueq_training_gradients_equal_e3nn(accelerated):
    reference, fast, graph = accelerated["mace"]
    grads = []
    for model in (reference, fast):
        model.train()
        model.zero_grad()
        out = model(graph)  # forces with create_graph=True in training mode
        (out["energy"].pow(2).sum() + out["forces"].pow(2).sum()).backward()
        model.eval()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()
                      if p.grad is not None})
    assert list(grads[0]) == list(grads[1]) and any("product.weight" in k for k in grads[1])
    for k in grads[0]:
        _close(grads[1][k], grads[0][k])


@needs_cueq
def test_restore_and_export_take_the_e3nn_path(accelerated, tmp_path):
    from geoff.export import export, load_exported

    reference, fast, graph = accelerated["nequip"]
    path = export(fast, tmp_path / "m.pt")  # restore() on export's copy, then TorchScript
    module, _ = load_exported(path)
    graph = dict(graph, n_local=torch.tensor([graph["positions"].shape[0]]))
    ref = reference(graph, True, True)
    out = module(graph, True, True)
    for key in ("energy", "forces", "virial"):
        _close(out[key], ref[key])
    assert any(type(m).__name__ == "CueqConvolution" for m in fast.modules())  # untouched
    restored = cueq.restore(__import__("copy").deepcopy(fast))
    assert {type(m) for m in restored.modules()} >= {Convolution}
    assert not any(type(m).__name__.startswith("Cueq") for m in restored.modules())


@needs_cueq
def test_cueq_last_layer_with_and_without_vectors():
    """A direct head keeps MACE's last-layer vectors (the full contraction kernel); the
    conservative head runs the 0e-only kernel. Both equal the e3nn path."""
    graph = atoms_to_graph(rattled_triclinic(), small_model("mace"), dtype=torch.float64)
    for head in ("conservative", "both"):
        reference = small_model("mace", force_head=head)
        fast = cueq.accelerate(small_model("mace", force_head=head), method="naive")
        last = fast.representation.layers[-1].product
        assert last.scalars_only == (head == "conservative")
        ref, out = reference(graph, compute_stress=True), fast(graph, compute_stress=True)
        for key in ref:
            _close(out[key], ref[key])


@needs_cueq
def test_calculator_kernels_option():
    model = small_model("mace", species=("Cu", "Zr"))
    atoms = rattled_triclinic()
    results = []
    for kernels in ("e3nn", "cueq"):
        calc = GeoffCalculator(model, dtype="float64", kernels=kernels)
        atoms.calc = calc
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
        fused = any(type(m) is SymmetricContraction for m in calc.model.modules())
        assert fused == (kernels == "e3nn")
    for a, b in zip(*results):
        _close(torch.as_tensor(b), torch.as_tensor(a))
    with pytest.raises(ValueError, match="no e3nn tensor product"):
        GeoffCalculator(small_model("schnet"), dtype="float64", kernels="cueq")


@needs_cueq
@pytest.mark.parametrize("name", MODELS)
def test_cueq_reads_the_radial_table(name):
    """Tables made before or after the swap reach the kernels (per edge and per pair) and
    survive ``restore``: the same numbers as the tabulated e3nn path."""
    tabulated = small_model(name)
    tabulate_radial(tabulated)
    graph = atoms_to_graph(rattled_triclinic(), tabulated, dtype=torch.float64)
    ref = tabulated(graph)
    before = small_model(name)
    tabulate_radial(before)
    after = cueq.accelerate(small_model(name), method="naive")
    tabulate_radial(after)
    for fast in (cueq.accelerate(before, method="naive"), after):
        assert all(m.table is not None for m in fast.modules()
                   if type(m).__name__ == "CueqConvolution")
        for g in (graph, add_edge_pairs(graph)):
            for key in ("energy", "forces"):
                _close(fast(g)[key], ref[key])
    restored = cueq.restore(after)
    _close(restored(graph)["forces"], ref["forces"])


needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and cueq.available("cuda")),
                               reason="needs CUDA and cuEquivariance's GPU kernels")


@needs_gpu
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gpu_kernels_equal_e3nn(name, dtype):
    """The fused uniform_1d kernels against the e3nn path on the GPU (float32: round-off)."""
    atoms = rattled_triclinic(n=(4, 4, 4))
    exact_model = small_model(name).to(device="cuda")  # float64 e3nn: the yardstick
    exact = exact_model(atoms_to_graph(atoms, exact_model, dtype=torch.float64, device="cuda"),
                        compute_stress=True)
    model = small_model(name).to(device="cuda", dtype=dtype)
    graph = atoms_to_graph(atoms, model, dtype=dtype, device="cuda")
    ref = model(graph, compute_stress=True)
    fast = cueq.accelerate(small_model(name).to(device="cuda", dtype=dtype))
    assert all(m.kernel.method == "uniform_1d" for m in fast.modules() if hasattr(m, "kernel"))
    tabulated = cueq.accelerate(small_model(name).to(device="cuda", dtype=dtype))
    tabulate_radial(tabulated)  # the table, read by the fused kernel per pair
    for candidate, chunk, g in ((fast, 0, graph), (fast, 997, graph),
                             (fast, 0, add_edge_pairs(graph)),
                             (tabulated, 0, add_edge_pairs(graph))):
        out = set_edge_chunk(candidate, chunk)(g, compute_stress=True)
        for key in KEYS:
            scale = float(exact[key].abs().max())
            err = float((out[key].double() - exact[key]).abs().max())
            if dtype == torch.float64:  # the table: its interpolation error, ~1e-9
                assert err <= (1e-7 if candidate is tabulated else 1e-10) * scale, (key, err)
            else:  # round-off: no worse than the e3nn path's own float32 error
                own = float((ref[key].double() - exact[key]).abs().max())
                assert err <= 4 * own + 1e-7 * scale, (key, err, own, scale)


@needs_cueq
@pytest.mark.parametrize("name, hp", [
    ("mace", dict(n_features=64, n_layers=2, l_max=3, hidden_l_max=1, correlation=3)),
    ("nequip", dict(n_features=64, n_layers=3, l_max=2)),
])
def test_polynomials_fit_the_uniform_1d_kernel(name, hp):
    """What cuEquivariance's uniform_1d GPU kernel asks of a polynomial (checked here on the
    CPU: the kernel itself needs a GPU): scalar coefficients, 0D or 1D operands, one segment
    extent (= channels) for every 1D operand, at the benchmark's hyper-parameters."""
    from geoff.potentials import build_model

    model = build_model(name, species=["Cu", "Zr"], cutoff=5.0, **hp)
    polys = [cueq.convolution_polynomial(m.tp) for m in model.modules() if type(m) is Convolution]
    polys += [cueq.contraction_polynomial(m, scalars_only=only) for m in model.modules()
              if type(m) is SymmetricContraction for only in (False, True)]
    assert len(polys) == model.n_layers * (3 if name == "mace" else 1)
    for poly in polys:
        poly = poly.flatten_coefficient_modes().squeeze_modes()
        assert all(stp.coefficient_subscripts == "" for _, stp in poly.operations)
        extents = set()
        for operand in poly.operands:
            assert operand.ndim in (0, 1) and operand.all_same_segment_shape()
            if operand.ndim == 1:
                extents.add(operand.segment_shape)
        assert extents == {(64,)}


@needs_cueq
def test_cueq_default_chunk_is_its_own_and_a_chosen_chunk_stays():
    """The fused kernels get CUEQ_EDGE_CHUNK where the model had the e3nn default; a chunk the
    user chose stays; ``restore`` hands the e3nn default back."""
    from geoff.potentials.chunking import DEFAULT_EDGE_CHUNK

    def chunks(model):
        return {m.edge_chunk for m in model.modules() if hasattr(m, "edge_chunk")}

    model = cueq.accelerate(small_model("mace"), method="naive")
    assert chunks(model) == {cueq.CUEQ_EDGE_CHUNK}
    assert chunks(cueq.restore(model)) == {DEFAULT_EDGE_CHUNK}
    chosen = cueq.accelerate(set_edge_chunk(small_model("mace"), 4096), method="naive")
    assert chunks(chosen) == {4096}
    assert chunks(cueq.restore(chosen)) == {4096}

"""``SpeciesLinear`` (NequIP's self-connection, MACE's skip) against e3nn's
``FullyConnectedTensorProduct`` on one-hot species: the module it replaced, in numbers."""
import pytest
import torch
from e3nn import o3

from geoff.potentials.e3nn_tools import E3NN_OPTIONS, SpeciesLinear

CASES = [
    # (irreps in, species, irreps out, which blocks take the matmul form)
    ("16x0e+16x1o+8x2e", 3, "16x0e+16x1o+4x2e+8x0o", [1, 1, 0]),  # 3 x 5 > 8: e3nn's order
    ("8x0e+8x1o", 2, "8x0e+8x1o", [1, 1]),
    ("4x0e", 30, "6x0e", [0]),  # many elements: per-atom weight matrices
]


@pytest.mark.parametrize("irreps_in, n_species, irreps_out, by_matmul", CASES)
def test_matches_e3nn_fully_connected_product_values_and_gradients(irreps_in, n_species,
                                                                   irreps_out, by_matmul):
    torch.manual_seed(0)
    reference = o3.FullyConnectedTensorProduct(irreps_in, f"{n_species}x0e", irreps_out,
                                               **E3NN_OPTIONS).double()
    torch.manual_seed(0)  # same random stream: same initial weights
    module = SpeciesLinear(o3.Irreps(irreps_in), n_species, o3.Irreps(irreps_out)).double()
    assert torch.equal(module.weight, reference.weight)
    assert [p[-1] for p in module.paths] == by_matmul
    x = torch.randn(11, reference.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
    species = torch.randint(0, n_species, (11,))
    one_hot = torch.nn.functional.one_hot(species, n_species).double()
    want, got = reference(x, one_hot), module(x, species)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(want)
    gx_want, gw_want = torch.autograd.grad((want * probe).sum(), [x, reference.weight])
    gx_got, gw_got = torch.autograd.grad((got * probe).sum(), [x, module.weight])
    torch.testing.assert_close(gx_got, gx_want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw_got, gw_want, rtol=1e-12, atol=1e-12)
    scripted = torch.jit.script(module)
    torch.testing.assert_close(scripted(x, species), got, rtol=0, atol=0)


def test_checkpoint_keys_and_values_load_into_e3nn_module():
    """Same state-dict keys and shapes as e3nn's module: old checkpoints load unchanged."""
    module = SpeciesLinear(o3.Irreps("8x0e+8x1o"), 2, o3.Irreps("8x0e+8x1o"))
    reference = o3.FullyConnectedTensorProduct("8x0e+8x1o", "2x0e", "8x0e+8x1o", **E3NN_OPTIONS)
    assert {k: v.shape for k, v in module.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    reference.load_state_dict(module.state_dict())
    dtype = module.weight.dtype
    x, species = torch.randn(5, 32, dtype=dtype), torch.tensor([0, 1, 1, 0, 1])
    one_hot = torch.nn.functional.one_hot(species, 2).to(dtype)
    torch.testing.assert_close(module(x, species), reference(x, one_hot))

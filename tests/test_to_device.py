"""Host arrays onto the device without a stream synchronisation (``geoff.to_device``), and
the neighbour search's synchronisations counted on a GPU."""
import numpy as np
import pytest
import torch
from ase.build import bulk

from conftest import cuda_syncs
from geoff.neighbours import torch_neighbour_list
from geoff.to_device import to_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_copies_convert_and_keep_values():
    a = np.arange(12.0).reshape(4, 3)
    t = to_device(a, "cpu", torch.float32)
    assert t.dtype == torch.float32 and t.device.type == "cpu"
    np.testing.assert_array_equal(t.numpy(), a.astype(np.float32))
    assert to_device([True, False, True], "cpu").dtype == torch.bool
    x = torch.ones(3, dtype=torch.float64)
    assert to_device(x, "cpu", torch.float32).dtype == torch.float32


@CUDA
def test_cuda_copy_does_not_wait_and_keeps_the_values_it_was_given():
    a = np.random.default_rng(0).normal(size=(50_000, 3))
    before = a.copy()
    busy = torch.randn(4096, 4096, device="cuda")
    for _ in range(20):  # queue work, so that a synchronising copy would have to wait
        busy = busy @ busy / 64.0
    t, syncs = cuda_syncs(lambda: to_device(a, "cuda", torch.float64))
    a[:] = -1.0  # the copy was staged at the call: changing the array now cannot reach it
    assert syncs == 0
    np.testing.assert_array_equal(t.cpu().numpy(), before)


@CUDA
@pytest.mark.parametrize("all_pairs", [True, False])
def test_neighbour_search_synchronises_once_or_twice(all_pairs, monkeypatch):
    """All pairs: the ``nonzero`` alone (the finiteness check's number lands with it); the
    cell list: also the fullest bin. Nothing else waits for the device (one chunk)."""
    import geoff.neighbours as nl

    if not all_pairs:
        monkeypatch.setattr(nl, "ALL_PAIRS_MAX_ATOMS", {})
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (6, 6, 6)  # 21.7 Å: two cutoffs high
    x = torch.as_tensor(atoms.positions, device="cuda")
    torch_neighbour_list(x, atoms.cell.array, atoms.pbc, 5.5)  # warm-up
    (i, _, _, _), syncs = cuda_syncs(lambda: torch_neighbour_list(x, atoms.cell.array, atoms.pbc,
                                                               5.5))
    assert len(i) == len(atoms) * 54 and syncs == (1 if all_pairs else 2)  # 4 shells: 54


def test_results_come_back_as_float64_arrays_of_their_shapes():
    from geoff.to_device import to_host

    energy = torch.tensor([-3.25], dtype=torch.float64)
    forces = torch.randn(5, 3, dtype=torch.float32)
    stress = torch.randn(3, 3, dtype=torch.float64)
    out = to_host({"energy": energy, "forces": forces, "stress": stress})
    assert list(out) == ["energy", "forces", "stress"]
    assert all(v.dtype == np.float64 for v in out.values())
    assert out["forces"].shape == (5, 3) and out["stress"].shape == (3, 3)
    np.testing.assert_array_equal(out["forces"], forces.double().numpy())  # widened exactly
    np.testing.assert_array_equal(out["energy"], [-3.25])
    forces.zero_()  # copies, not views of the tensors
    assert np.abs(out["forces"]).sum() > 0
    assert to_host({}) == {}

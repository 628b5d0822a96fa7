"""The neighbour search captured with the model (geoff/captured_call.py): on the CPU through
``pad_only`` (the same static buffers, padded search and ``nonzero_static`` compaction, run
eagerly) against the calculator's usual path; the captured graph itself on a GPU."""
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from conftest import cluster, cuda_syncs, small_model, verlet_run
from geoff.calculators import GeoffCalculator
from geoff.captured_call import CapturedCall, captured_call
from geoff.structure_checks import OverlapError, overlap_threshold

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
MODELS = ["schnet", "painn", "egnn", "nequip", "mace", "symgnn"]
CUTOFF = 4.0  # small_model's


def crystal(seed=0):
    """108 rattled Cu/Zr atoms in a cubic cell 10.8 Å high (>= 2 cutoffs: all pairs apply)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=seed)
    atoms.numbers[::4] = 40
    return atoms


def sheared(seed=0):
    atoms = crystal(seed)
    cell = atoms.cell.array.copy()
    cell[1] += [1.0, 0.0, 0.0]
    cell[2] += [0.5, -0.4, 0.0]
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def _calcs(model, device="cpu", dtype="float64", **kwargs):
    """(usual path, captured-search path): on the CPU the latter runs ``pad_only``."""
    usual = GeoffCalculator(model, device=device, dtype=dtype, cuda_graphs=False, **kwargs)
    captured = GeoffCalculator(model, device=device, dtype=dtype, cuda_graphs=True, **kwargs)
    if device == "cpu":
        assert captured.captured_call is None  # nothing to capture on a CPU
        captured.captured_call = CapturedCall(captured.model, overlap_threshold(model),
                                              captured.dtype, "cpu", pad_only=True)
    return usual, captured


def _results(calc, atoms, stress=True):
    atoms = atoms.copy()
    atoms.calc = calc
    out = [atoms.get_potential_energy(), atoms.get_forces(), atoms.get_potential_energies()]
    return out + [atoms.get_stress()] if stress else out


@pytest.mark.parametrize("name", MODELS)
def test_captured_search_equals_the_usual_path(name):
    model = small_model(name, species=("Cu", "Zr", "H", "C", "O"))
    usual, captured = _calcs(model)
    for atoms in (crystal(), sheared(), molecule("CH3CH2OH"), cluster()):
        stress = bool(atoms.pbc.all())
        assert captured.captured_call.takes(atoms)
        for a, b in zip(_results(usual, atoms, stress), _results(captured, atoms, stress)):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert captured.captured_call.stats["calls"] >= 4


def test_padding_atoms_and_slots_change_nothing():
    """One bucket serves structures of different sizes and edge counts; each result equals
    the usual path's (padding atoms never meet real ones, unused slots carry no message)."""
    model = small_model("painn")
    usual, captured = _calcs(model)
    base = crystal()
    for n in (108, 104, 97):  # one bucket of 120 atom slots
        atoms = base[:n]
        for a, b in zip(_results(usual, atoms), _results(captured, atoms)):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert {key[0] for key in captured.captured_call.buckets} == {120}


def test_a_denser_structure_regrows_its_bucket_and_is_computed_again():
    model = small_model("schnet")
    usual, captured = _calcs(model)
    dilute = crystal()
    dilute.set_cell(dilute.cell * 1.15, scale_atoms=True)  # second shell beyond the cutoff
    _results(captured, dilute, stress=False)
    cc = captured.captured_call
    (shape, (edges, _)), = cc.capacity.items()
    dense = crystal(seed=1)  # 18 neighbours an atom, not 12: more than the bucket holds
    for a, b in zip(_results(usual, dense, False), _results(captured, dense, False)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert cc.stats["regrown"] == 1 and cc.capacity[shape][0] > edges


@pytest.mark.parametrize("atoms, search", [
    (crystal()[:0], None),  # no atoms
    (bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3), "pairs"),  # 10.8 Å >= 2 cutoffs
    (bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), "cells"),  # 7.2 Å: a cell list
    (bulk("Cu", "fcc", a=3.61), "cells"),  # one atom, a cell smaller than the cutoff
])
def test_takes_all_pairs_cells_and_cell_lists(atoms, search):
    cc = CapturedCall(small_model("schnet"), 1.0, torch.float64, "cpu", pad_only=True)
    assert cc.takes(atoms) == (search is not None)
    if search is not None:
        assert cc.search_of(atoms)[0] == search


@pytest.mark.parametrize("name", ["schnet", "painn", "mace"])
def test_the_captured_cell_list_equals_the_usual_path(name):
    """Cells under two cutoffs (cubic, sheared, one atom, elongated) and a structure above
    the all-pairs limit search through the fixed-shape cell list."""
    model = small_model(name)
    usual, captured = _calcs(model)
    small = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    small.rattle(0.05, seed=2)
    small.numbers[::3] = 40
    tilted = small.copy()
    tilted.set_cell(small.cell.array + [[0, 0, 0], [0.8, 0, 0], [0.3, -0.5, 0]],
                    scale_atoms=True)
    one = bulk("Cu", "fcc", a=3.61)
    long = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((1, 1, 7))
    long.rattle(0.05, seed=3)
    large = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((9, 9, 8))  # 2,592 atoms
    large.rattle(0.05, seed=4)
    for atoms in (small, tilted, one, long, large):
        assert captured.captured_call.search_of(atoms)[0] == "cells"
        for a, b in zip(_results(usual, atoms), _results(captured, atoms)):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert captured.captured_call.stats["calls"] >= 5


def test_a_fuller_bin_regrows_the_bin_slots():
    model = small_model("schnet")
    usual, captured = _calcs(model)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 3))
    atoms.rattle(0.05, seed=0)
    _results(captured, atoms, stress=False)
    cc = captured.captured_call
    (shape, (_, slots)), = cc.capacity.items()
    crowded = atoms.copy()  # every atom of the cell in one corner region: a full bin
    crowded.positions = atoms.positions * 0.6 + 0.2
    crowded.set_cell(atoms.cell)
    for a, b in zip(_results(usual, crowded, False), _results(captured, crowded, False)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert cc.stats["regrown"] == 1 and cc.capacity[shape][1] > slots


def test_slabs_large_and_non_finite_structures_take_the_usual_path():
    model = small_model("schnet")
    cc = CapturedCall(model, 1.0, torch.float64, "cpu", max_atoms=100, pad_only=True)
    slab = crystal()[:100]
    slab.pbc = (True, True, False)
    assert not cc.takes(slab)
    assert not cc.takes(crystal())  # 108 > max_atoms
    broken = crystal()[:50]
    broken.positions[3] = np.nan
    assert not cc.takes(broken)
    _, captured = _calcs(model)
    broken.calc = captured
    with pytest.raises(ValueError, match="non-finite"):  # the usual path's error
        broken.get_potential_energy()


def test_an_overlap_is_refused_naming_the_atoms():
    _, captured = _calcs(small_model("schnet"))
    atoms = crystal()
    atoms.positions[7] = atoms.positions[2] + [0.1, 0.0, 0.0]
    atoms.calc = captured
    with pytest.raises(OverlapError, match=r"atoms 2 \(Cu\) and 7 \(Cu\) are 0.1 Å apart"):
        atoms.get_potential_energy()
    assert captured.captured_call.stats["calls"] == 1  # refused by the captured path's check


def test_unknown_elements_are_refused_as_usual():
    _, captured = _calcs(small_model("schnet"))
    atoms = crystal()
    atoms.numbers[5] = 79
    atoms.calc = captured
    with pytest.raises(ValueError, match="Au"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("name", ["schnet", "painn", "mace"])
def test_the_search_alone_above_max_atoms_equals_the_usual_path(name):
    """Above ``max_atoms`` the search alone is captured and the calculator's own model call
    runs on its padded Graph (all pairs and cell list; a denser structure regrows)."""
    model = small_model(name, species=("Cu", "Zr", "H", "C", "O"))
    usual, captured = _calcs(model)
    cc = captured.captured_call = CapturedCall(
        captured.model, overlap_threshold(model), captured.dtype, "cpu", pad_only=True,
        max_atoms=20, search_max_atoms=5_000, eager=captured._call_model)
    small = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)  # 32 atoms: cell list
    small.rattle(0.05, seed=1)
    dense = crystal(seed=4)
    dense.set_cell(dense.cell * 0.9, scale_atoms=True)  # more edges than crystal()'s bucket
    for atoms in (crystal(), sheared(), small, dense, molecule("CH3CH2OH")):
        stress = bool(atoms.pbc.all())
        for a, b in zip(_results(usual, atoms, stress), _results(captured, atoms, stress)):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * max(1.0, np.abs(a).max()))
    # dense overflows the buckets sized by crystal(): its two calls (energy+forces, then
    # stress: a shape of its own) each run twice
    assert cc.stats["regrown"] == 2 and cc.stats["calls"] == 11, cc.stats
    whole = {key[0]: key[4] for key in cc.buckets}  # atoms bucket: the model in the graph?
    assert whole[32] and not any(v for n, v in whole.items() if n > 32)  # 9-atom molecule
    assert {key[1][0] for key in cc.buckets} == {"pairs", "cells"}


def test_capture_after_takes_the_usual_path_until_a_shape_repeats():
    model = small_model("schnet", species=("Cu", "Zr", "H", "C", "O"))
    usual, captured = _calcs(model)
    cc = captured.captured_call = CapturedCall(
        captured.model, overlap_threshold(model), captured.dtype, "cpu", pad_only=True,
        capture_after=2)
    first = _results(captured, crystal(), stress=False)
    assert cc.stats["calls"] == 0 and not cc.buckets  # once: the usual path
    for a, b in zip(_results(usual, crystal(), False), first):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    second = _results(captured, crystal(seed=1), stress=False)
    assert cc.stats["calls"] == 1 and len(cc.buckets) == 1
    for a, b in zip(_results(usual, crystal(seed=1), False), second):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    _results(captured, molecule("CH3CH2OH"), stress=False)  # a new shape: usual again
    assert cc.stats["calls"] == 1


def test_the_option_plumbing():
    model = small_model("schnet")
    assert captured_call(model, True, "cpu", torch.float64) is None
    assert captured_call(model, False, "cuda", torch.float64) is None
    assert captured_call(small_model("dimenet"), True, "cuda", torch.float64) is None
    assert GeoffCalculator(model, cuda_graphs=True).captured_call is None  # CPU
    assert GeoffCalculator(model).captured_call is None  # "auto", the default: CPU
    auto = captured_call(model, "auto", "cuda", torch.float32, eager=lambda g, **k: None)
    if auto is not None:  # a CUDA build with nonzero_static
        assert (auto.max_atoms, auto.search_max_atoms, auto.capture_after) == (3_000, 50_000, 2)
        assert captured_call(model, "auto", "cuda", torch.float32, eager=lambda g, **k: None,
                             auto_max_atoms=10_000).max_atoms == 10_000
    with pytest.raises(ValueError, match="needs eager"):
        CapturedCall(model, 0.5, torch.float64, "cpu", max_atoms=10, search_max_atoms=100)


@CUDA
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 2e-4)])
def test_captured_on_gpu_equals_eager(name, dtype, tol):
    model = small_model(name, species=("Cu", "Zr", "H", "C", "O"))
    usual, captured = _calcs(model, device="cuda", dtype=dtype)
    small = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)  # under two cutoffs: cell list
    small.rattle(0.05, seed=1)
    large = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((9, 9, 8))  # 2,592: cell list
    large.rattle(0.05, seed=2)
    for atoms in (crystal(), sheared(), crystal(seed=3), molecule("CH3CH2OH"), small, large):
        stress = bool(atoms.pbc.all())
        for a, b in zip(_results(usual, atoms, stress), _results(captured, atoms, stress)):
            np.testing.assert_allclose(b, a, rtol=0, atol=tol * max(1.0, np.abs(a).max()))
    cc = captured.captured_call
    assert cc.stats["captures"] >= 4 and cc.stats["failed"] == 0, cc.failed
    assert {key[1][0] for key in cc.buckets} == {"pairs", "cells"}


@CUDA
@pytest.mark.parametrize("name, whole_large", [("schnet", True), ("painn", False)])
def test_the_default_calculator_on_gpu_captures_shapes_that_repeat(name, whole_large):
    """cuda_graphs="auto" (the default): a shape's first call takes the usual path, the
    next ones replay; 108 atoms with the model in the graph, 3,200 the search alone (SchNet:
    with the model, to its CAPTURE_MAX_ATOMS)."""
    model = small_model(name)
    usual = GeoffCalculator(model, device="cuda", dtype="float64", cuda_graphs=False)
    default = GeoffCalculator(model, device="cuda", dtype="float64")
    large = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((10, 10, 8))
    limit = 10_000 if name == "schnet" else 3_000  # the representation's CAPTURE_MAX_ATOMS
    assert cc_limits(default) == (limit, 50_000) and len(large) > 3_000
    for atoms in (crystal(), crystal(seed=1), crystal(seed=2)) + tuple(
            _rattled(large, seed) for seed in range(3)):
        for a, b in zip(_results(usual, atoms, False), _results(default, atoms, False)):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * max(1.0, np.abs(a).max()))
    cc = default.captured_call
    assert cc.stats["failed"] == 0, cc.failed
    assert sorted(key[4] for key in cc.buckets) == sorted([True, whole_large])
    assert cc.stats["calls"] == 4  # each shape's second and third calls


def cc_limits(calc):
    return calc.captured_call.max_atoms, calc.captured_call.search_max_atoms


def _rattled(atoms, seed):
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=seed)
    return atoms


@CUDA
def test_a_new_structure_waits_for_the_device_once():
    """A structure of a known bucket: copy in, replay, results back (the one wait)."""
    _, captured = _calcs(small_model("schnet"), device="cuda", dtype="float32")
    _results(captured, crystal(), stress=False)
    atoms = crystal(seed=5)
    atoms.calc = captured
    _, syncs = cuda_syncs(atoms.get_forces)
    assert syncs <= 1 and captured.captured_call.stats["captures"] == 1


@CUDA
def test_md_on_gpu_follows_the_usual_path():
    runs = [verlet_run(crystal(), calc) for calc in _calcs(small_model("painn"), "cuda")]
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=0, atol=1e-9)


def test_a_failed_capture_falls_back_to_the_usual_path_once(monkeypatch):
    import geoff.cuda_graphs as cg

    def broken(self, call, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cg.CapturePool, "capture", broken)
    model = small_model("schnet")
    usual, captured = _calcs(model)
    captured.captured_call.pad_only = False  # try to capture (on the CPU: the patched one)
    with pytest.warns(RuntimeWarning, match="capture of the neighbour search"):
        results = _results(captured, crystal(), stress=False)
    for a, b in zip(_results(usual, crystal(), False), results):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    _results(captured, crystal(seed=2), stress=False)  # remembered: no second warning
    assert captured.captured_call.stats["failed"] == 1
    assert captured.captured_call.stats["calls"] == 0


@CUDA
def test_a_capture_that_would_not_fit_in_memory_is_refused_before_it_starts(monkeypatch):
    """Out of memory inside a capture can leave the process unusable: the free memory is
    checked after the warm-up, and a graph that would not fit runs uncaptured."""
    import geoff.potentials.autochunk as autochunk

    monkeypatch.setattr(autochunk, "available_bytes", lambda device: 0)
    usual, captured = _calcs(small_model("schnet"), device="cuda")
    with pytest.warns(RuntimeWarning, match="would keep"):
        results = _results(captured, crystal(), stress=False)
    for a, b in zip(_results(usual, crystal(), False), results):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert captured.captured_call.stats["failed"] == 1
    assert captured.captured_call.stats["captures"] == 0


@CUDA
def test_dropped_calculators_collected_during_a_capture_do_not_break_it():
    """A calculator dropped in a reference cycle is freed by the garbage collector, which
    may run inside another calculator's capture and destroy the old graphs there; with the
    collector run at nearly every allocation this failed captures (seen on an H200 without
    forcing it: 2 of 48 calculators made in a loop)."""
    import gc

    model = small_model("schnet", species=("Cu", "Zr", "H", "C", "O"))
    threshold = gc.get_threshold()
    gc.set_threshold(1)
    try:
        for seed in range(3):
            _, old = _calcs(model, device="cuda", dtype="float32")
            _results(old, crystal(seed=seed), stress=False)
            assert old.captured_call.stats["captures"] == 1
            old.cycle = old  # only the collector frees it
            del old
            usual, captured = _calcs(model, device="cuda", dtype="float32")
            got = _results(captured, molecule("CH3CH2OH"), stress=False)
            want = _results(usual, molecule("CH3CH2OH"), stress=False)
            for a, b in zip(want, got):
                np.testing.assert_allclose(b, a, rtol=0, atol=2e-4 * max(1.0, np.abs(a).max()))
            stats = captured.captured_call.stats
            assert stats["failed"] == 0 and stats["captures"] == 1, captured.captured_call.failed
    finally:
        gc.set_threshold(*threshold)
        gc.collect()


@CUDA
def test_a_pool_whose_capture_failed_captures_again():
    """A failed capture leaves its memory pool recording; the next capture must not
    inherit it ("beginAllocateToPool: already recording to mempool_id")."""
    from geoff.cuda_graphs import CapturePool

    pool = CapturePool()
    x = torch.arange(4.0, device="cuda")
    with pytest.raises(Exception):
        pool.capture(lambda: {"y": x * float((x * 2).sum())}, "cuda")  # a host read
    graph, out = pool.capture(lambda: {"y": x * 3}, "cuda")
    x.copy_(torch.ones(4, device="cuda"))
    graph.replay()
    assert out["y"].tolist() == [3.0] * 4


@pytest.mark.parametrize("head", ["direct", "both"])
def test_direct_force_heads_through_the_captured_search(head):
    """A direct head's forces, and with "both" the conservative ones too, and an energy-only
    call (no backward pass: a bucket of its own)."""
    model = small_model("painn", force_head=head)
    usual, captured = _calcs(model)
    for atoms in (crystal(), bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)):
        out = []
        for calc in (usual, captured):
            a = atoms.copy()
            a.calc = calc
            energy = a.get_potential_energy()  # energy alone first
            got = [energy, a.get_forces()]
            if head == "both":
                got.append(calc.get_property("direct_forces", a))
            out.append(got)
        for a, b in zip(*out):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert {key[1][0] for key in captured.captured_call.buckets} == {"pairs", "cells"}

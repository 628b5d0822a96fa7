"""``edge_chunk="auto"`` (``geoff/potentials/autochunk.py``): the chooser, the calibration fit,
the out-of-memory retry and the results, on the CPU (the GPU's memory queries are replaced by
fakes); one test runs the real calibration where CUDA is present."""
import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk

from conftest import small_model
from geoff.calculators.ase import GeoffCalculator
from geoff.graph import atoms_to_graph
from geoff.potentials import autochunk
from geoff.potentials.autochunk import (AutoChunk, MemoryFit, calibrate, choose_edge_chunk,
                                        probe_graph)
from geoff.potentials.chunking import DEFAULT_EDGE_CHUNK, EdgeMessages, set_edge_chunk

pytestmark = pytest.mark.usefixtures("one_thread")

GB = 2 ** 30
FIT = MemoryFit(fixed=1e8, kept=2e3, chunked=4e4)  # bytes, bytes/edge, bytes/edge


def _cu_graph(model, k=6, dtype=torch.float64):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (k, k, k)
    atoms.rattle(0.05, seed=1)
    return atoms_to_graph(atoms, model, dtype=dtype)


# --- the chooser, a pure function -------------------------------------------------------------

def test_whole_graph_that_fits_is_not_chunked():
    n_edges = 1_300_000
    assert choose_edge_chunk(n_edges, FIT.peak(n_edges, 0) / 0.85 + 1, FIT) == 0


def test_chunk_is_the_largest_power_of_two_that_fits():
    n_edges, available = 1_300_000, 40 * GB
    chunk = choose_edge_chunk(n_edges, available, FIT)
    assert 0 < chunk < n_edges and chunk & (chunk - 1) == 0
    assert FIT.peak(n_edges, chunk) <= 0.85 * available < FIT.peak(n_edges, 2 * chunk)


def test_headroom_is_kept():
    n_edges = 1_000_000
    peak = FIT.peak(n_edges, 0)
    assert choose_edge_chunk(n_edges, peak / 0.95, FIT, headroom=0.05) == 0
    assert choose_edge_chunk(n_edges, peak / 0.95, FIT, headroom=0.15) > 0


def test_nothing_fits_gives_the_smallest_chunk():
    assert choose_edge_chunk(10_000_000, 1 * GB, FIT) == autochunk.MIN_CHUNK
    assert choose_edge_chunk(10_000_000, 0, FIT, min_chunk=512) == 512
    assert choose_edge_chunk(3000, 0, FIT) == 3000  # fewer edges than the smallest chunk


def test_no_chunking_when_chunks_save_nothing():
    flat = MemoryFit(fixed=0.0, kept=5e4, chunked=0.0)
    assert choose_edge_chunk(10_000_000, 1 * GB, flat) == 0


def test_memory_fit_peak():
    assert FIT.peak(1000, 0) == FIT.peak(1000, 5000) == 1e8 + 1000 * (2e3 + 4e4)
    assert FIT.peak(1000, 100) == 1e8 + 1000 * 2e3 + 100 * 4e4


# --- the calibration ---------------------------------------------------------------------------

def test_probe_graph_is_a_compact_subgraph():
    model = small_model("schnet")
    graph = _cu_graph(model)
    n_edges = graph["edge_index"].shape[1]
    probe = probe_graph(graph, n_edges // 4)
    n_probe = probe["positions"].shape[0]
    e_probe = probe["edge_index"].shape[1]
    assert n_edges // 8 < e_probe < n_edges // 2
    assert probe["edge_index"].max() < n_probe and probe["edge_index"].min() >= 0
    # the same edge vectors as the original edges between those atoms
    i, j = probe["edge_index"]
    vec = probe["positions"][j] - probe["positions"][i] + probe["shifts"]
    length = vec.norm(dim=1)
    assert float(length.max()) < model.cutoff and float(length.min()) > 1.5
    # a ball: its atoms keep more than half their neighbours
    assert e_probe / n_probe > 0.5 * n_edges / graph["positions"].shape[0]
    assert bool((probe["edge_index"][0][1:] >= probe["edge_index"][0][:-1]).all())


def _replica_batch(model, replicas=6):
    """``replicas`` copies of a 108-atom Cu cell, each moved a little, as one batch: they
    overlap in space, as the batched replicas do."""
    from geoff.graph import batch_graphs

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    graphs = []
    for r in range(replicas):
        a = atoms.copy()
        a.rattle(0.05, seed=r)
        graphs.append(atoms_to_graph(a, model, dtype=torch.float64))
    return batch_graphs(graphs)


def test_probe_of_a_replica_batch_is_its_first_whole_structures():
    """A ball would mix the overlapping replicas and keep few edges (the calibration then
    failed and fell back to fixed chunks); whole structures keep every edge."""
    model = small_model("schnet")
    graph = _replica_batch(model)
    per = int((graph["batch"][graph["edge_index"][0]] == 0).sum())  # edges of one replica
    probe = probe_graph(graph, int(2.5 * per))
    assert probe["cell"].shape[0] == 3 and int(probe["batch"].max()) == 2
    assert probe["positions"].shape[0] == 3 * 108 and probe["edge_index"].shape[1] == 3 * per
    assert probe["edge_index"].max() < 3 * 108
    torch.testing.assert_close(probe["positions"], graph["positions"][:3 * 108])
    fit = calibrate(model, graph, probe_edges=int(1.2 * per),
                    peak_bytes=lambda m, g, c: 1000 * g["edge_index"].shape[1])
    assert fit.kept + fit.chunked == pytest.approx(1000.0)
    one = probe_graph(_cu_graph(model, k=4), 2000)  # one structure: still a ball
    assert one["cell"].shape[0] == 1 and one["edge_index"].shape[1] < 2 * 2000


@pytest.mark.parametrize("sees_chunk", [True, False])
def test_calibration_recovers_a_linear_memory_law(sees_chunk):
    model = small_model("schnet")
    graph = _cu_graph(model)
    law = MemoryFit(fixed=0.0, kept=1.5e3, chunked=2.5e4)
    chunks_seen = []

    def fake_peak(m, g, chunk):
        chunks_seen.append(chunk)
        n_edges = g["edge_index"].shape[1]
        return law.peak(n_edges, chunk) if sees_chunk or chunk == 0 else law.kept * n_edges

    set_edge_chunk(model, 777)
    fit = calibrate(model, graph, peak_bytes=fake_peak, probe_edges=2000, sees_chunk=sees_chunk)
    for got, want in ((fit.fixed, 0.0), (fit.kept, law.kept), (fit.chunked, law.chunked)):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-6)
    assert chunks_seen[:2] == [0, 0] and chunks_seen[2] > 0
    assert {m.edge_chunk for m in model.modules() if isinstance(m, EdgeMessages)} == {777}


def test_calibration_errs_high_on_constant_costs():
    model = small_model("schnet")
    graph = _cu_graph(model)
    n_edges = graph["edge_index"].shape[1]
    law = MemoryFit(fixed=3e6, kept=1.5e3, chunked=2.5e4)
    fit = calibrate(model, graph, probe_edges=2000,
                    peak_bytes=lambda m, g, c: law.peak(g["edge_index"].shape[1], c))
    for chunk in (0, 1000, 4000):
        assert law.peak(n_edges, chunk) <= fit.peak(n_edges, chunk) < 1.5 * law.peak(n_edges, chunk)


@pytest.mark.parametrize("name", ["schnet", "mace"])
def test_cpu_calibration_predicts_the_saved_bytes_of_the_whole_graph(name):
    """CPU: the fit from small balls, extrapolated to the whole graph, matches what autograd
    saves there (within 25 %, not below 90 %: the balls' edge boundary errs high)."""
    model = small_model(name)
    graph = _cu_graph(model, k=6)  # 864 atoms
    n_edges = graph["edge_index"].shape[1]
    fit = calibrate(model, graph, peak_bytes=autochunk._saved_bytes, probe_edges=1500,
                    sees_chunk=False)
    assert fit.chunked > 0 and fit.kept > 0
    whole = autochunk._saved_bytes(model, graph, 0)
    assert 0.95 * whole < fit.peak(n_edges, 0) < 1.5 * whole
    chunked = autochunk._saved_bytes(model, graph, 2000)
    assert chunked < 0.6 * whole  # what chunking bounds is most of it
    # what stays saved in chunks: the fit's chunk-free part (errs high)
    assert 0.95 * chunked < fit.kept * n_edges < 1.5 * chunked


# --- the out-of-memory retry ------------------------------------------------------------------

class _Layer(EdgeMessages):
    pass


class _FakeModel(torch.nn.Module):
    """Raises torch.cuda.OutOfMemoryError when a call would hold more than ``limit`` edges."""

    def __init__(self, limit):
        super().__init__()
        self.layer, self.limit, self.calls = _Layer(), limit, []

    def forward(self, graph, compute_forces=True, compute_stress=False):
        n_edges = graph["edge_index"].shape[1]
        chunk = self.layer.edge_chunk
        held = n_edges if chunk <= 0 else min(chunk, n_edges)
        self.calls.append(chunk)
        if held > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return {"energy": torch.ones(1)}


def _fake_graph(n_atoms, n_edges):
    return {"positions": torch.zeros(n_atoms, 3),
            "edge_index": torch.zeros(2, n_edges, dtype=torch.long)}


@pytest.fixture
def fake_gpu(monkeypatch):
    """A 'GPU' with plenty of free memory whose calibration says every graph fits."""
    monkeypatch.setattr(autochunk, "uses_gpu_memory", lambda device: True)
    monkeypatch.setattr(autochunk, "available_bytes", lambda device: 100 * GB)
    monkeypatch.setattr(autochunk, "calibrate",
                        lambda model, graph, **how: MemoryFit(fixed=0.0, kept=1.0, chunked=1.0))


def test_out_of_memory_halves_the_chunk_retries_and_remembers(fake_gpu):
    model = _FakeModel(limit=300_000)
    auto = AutoChunk(model)
    graph = _fake_graph(30_000, 1_300_000)
    with pytest.warns(RuntimeWarning, match="out of GPU memory.*retrying with chunks of"):
        out = auto(graph)
    assert float(out["energy"]) == 1.0  # the user's call came back
    assert model.calls == [0, 2 ** 19, 2 ** 18]
    assert auto.last_chunk == auto.cap == 2 ** 18
    model.calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: no second warning
        auto(graph)
        auto(_fake_graph(3_000, 200_000))  # a smaller graph: under the cap, not chunked
    assert model.calls == [2 ** 18, 0]


def test_out_of_memory_everywhere_names_the_size_and_the_knob(fake_gpu):
    model = _FakeModel(limit=10)
    auto = AutoChunk(model)
    with pytest.warns(RuntimeWarning):
        with pytest.raises(torch.cuda.OutOfMemoryError, match=r"30000 atoms.*edge_chunk="):
            auto(_fake_graph(30_000, 1_300_000))
    assert len(model.calls) == autochunk.MAX_HALVINGS + 1
    assert model.calls[-1] >= autochunk.MIN_CHUNK


def test_small_graphs_skip_the_calibration(monkeypatch):
    monkeypatch.setattr(autochunk, "uses_gpu_memory", lambda device: True)

    def no_calibration(*args):
        raise AssertionError("calibrated a graph below DEFAULT_EDGE_CHUNK")

    monkeypatch.setattr(autochunk, "calibrate", no_calibration)
    model = _FakeModel(limit=10 ** 9)
    AutoChunk(model)(_fake_graph(100, DEFAULT_EDGE_CHUNK))
    assert model.calls == [0]


def test_failed_calibration_falls_back_to_the_default(monkeypatch):
    monkeypatch.setattr(autochunk, "uses_gpu_memory", lambda device: True)

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")

    monkeypatch.setattr(autochunk, "calibrate", out_of_memory)
    model = _FakeModel(limit=10 ** 9)
    with pytest.warns(RuntimeWarning, match="calibration failed"):
        AutoChunk(model)(_fake_graph(30_000, 1_300_000))
    assert model.calls == [DEFAULT_EDGE_CHUNK]


# --- results -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["schnet", "painn", "mace"])
def test_auto_chunked_equals_plain(name, monkeypatch):
    """A chunk chosen by auto (little free memory, shrunk thresholds) moves no result."""
    monkeypatch.setattr(autochunk, "uses_gpu_memory", lambda device: True)
    monkeypatch.setattr(autochunk, "DEFAULT_EDGE_CHUNK", 64)
    monkeypatch.setattr(autochunk, "MIN_CHUNK", 16)
    monkeypatch.setattr(autochunk, "available_bytes", lambda device: 1e5)
    monkeypatch.setattr(autochunk, "calibrate",
                        lambda model, graph, **how: MemoryFit(fixed=0.0, kept=10.0, chunked=1e3))
    model = small_model(name)
    graph = _cu_graph(model, k=2)
    n_edges = graph["edge_index"].shape[1]
    plain = set_edge_chunk(model, 0)(graph, compute_stress=True)
    auto = AutoChunk(model)
    chunked = auto(graph, compute_stress=True)
    assert 16 <= auto.last_chunk < n_edges // 2  # really chunked, several chunks
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(chunked[key], plain[key], rtol=1e-10, atol=1e-12)
    assert plain["forces"].abs().max() > 1e-6


def test_calculator_default_is_auto():
    model = small_model("painn")
    calc = GeoffCalculator(model, dtype="float64")
    assert isinstance(calc.auto_chunk, AutoChunk)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    forces = atoms.get_forces()
    assert calc.auto_chunk.last_chunk == 0  # a small graph: plain, no calibration
    assert not calc.auto_chunk.fits
    plain = GeoffCalculator(model, dtype="float64", edge_chunk=0)
    assert plain.auto_chunk is None
    np.testing.assert_allclose(forces, plain.get_forces(atoms), rtol=1e-10, atol=1e-12)


def test_edge_chunk_other_strings_raise():
    with pytest.raises(ValueError, match="'auto' is chosen per call"):
        GeoffCalculator(small_model("schnet"), edge_chunk="fast")
    with pytest.raises(ValueError, match="edge_chunk must be an int"):
        set_edge_chunk(small_model("schnet"), "auto")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_calibration_and_auto_results(monkeypatch):
    """On a GPU: the real calibration measures positive bytes per edge, a memory budget
    that forces chunks gives chunks, and auto equals plain (float64)."""
    model = small_model("painn").cuda()
    graph = {k: v.cuda() for k, v in _cu_graph(model, k=14).items()}
    n_edges = graph["edge_index"].shape[1]
    assert n_edges > DEFAULT_EDGE_CHUNK  # the calibrated branch
    fit = calibrate(model, graph, probe_edges=8192)
    assert fit.chunked > 0 and fit.kept + fit.chunked > 100  # bytes per edge
    plain = set_edge_chunk(model, 0)(graph)
    auto = AutoChunk(model)
    out = auto(graph)
    assert auto.last_chunk == 0  # an H200 holds this graph whole
    monkeypatch.setattr(autochunk, "available_bytes",
                        lambda device: 0.5 * auto.fits[next(iter(auto.fits))].peak(n_edges, 0))
    chunked = auto(graph)
    assert 0 < auto.last_chunk < n_edges
    for result in (out, chunked):
        torch.testing.assert_close(result["forces"], plain["forces"], rtol=1e-10, atol=1e-12)

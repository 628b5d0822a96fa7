"""``edge_chunk="auto"``: no edge chunking when the graph fits in memory, else the largest
chunk that fits.

Edge chunking (``chunking.py``) bounds the per-edge activations of a large graph at the price
of computing the messages twice: 1.5-1.9x slower on an H200 at 32k atoms. On the CPU
(8,788 FCC Cu atoms, 376k edges, float32, speed.py's models, 1 thread, best of 3 interleaved
calls on a loaded 2-core machine) chunks of 2^17 edges cost SchNet 2.3x (13.2 s plain, 30.6 s
chunked) and PaiNN 1.08x (78 s, 84 s); at 256 and 864 atoms (< 2^17 edges) both paths are
the same. A fixed chunk either wastes that price when the graph fits anyway, or lets a graph
run out of memory. ``AutoChunk`` picks the chunk per call:

* up to ``DEFAULT_EDGE_CHUNK`` (131,072) edges: no chunking, as the static default does;
* **CUDA**, above it: no chunking when the predicted peak of the whole graph fits in
  (1 - ``HEADROOM``) of the memory this process can still get (``torch.cuda.mem_get_info``
  free memory plus the caching allocator's free blocks); otherwise the largest power-of-two
  chunk whose predicted peak fits;
* **CPU**, above it: the same rule against the system's available RAM (``MemAvailable``)
  with ``CPU_HEADROOM`` (half) kept free, because there the prediction counts only the bytes
  autograd saves (exact on the CPU, where peak RSS is allocator noise), not transients. So
  the CPU no longer pays for chunks (up to 2.3x) when the system fits in RAM unchunked.

The prediction is measured, not declared per model: on the first large call ``calibrate``
runs energy+forces probes on a compact ball of the user's own graph (a warm-up, then about
twice ``PROBE_EDGES`` edges, plain and in small chunks), reads each one's memory (CUDA:
``torch.cuda.max_memory_allocated`` growth; CPU: bytes saved for backward, smaller probes of
``CPU_PROBE_EDGES``) and fits ``peak(E, C) = kept * E + chunked * min(C, E)`` (bytes; E
edges, C edges per chunk). Measuring covers every model, width, dtype and kernel
(cuEquivariance's fused kernels keep ~10x less per edge) without a table to keep in step
with the code; the ball's boundary atoms have fewer neighbours, which charges per-atom memory
to fewer edges, and constant costs are charged per edge too: the estimate errs high (2-23 %
for the test models on the CPU). The fit is cached per calculator and (device, dtype,
chunking module types); the calibration costs three small calls once and, on CUDA, resets
the peak-memory statistics.

Safety net: a call that still raises ``torch.cuda.OutOfMemoryError`` frees the cache, halves
the chunk, retries (at most ``MAX_HALVINGS`` times, never below ``MIN_CHUNK``), remembers the
smaller chunk as a cap for later calls and warns once; then it raises
``torch.cuda.OutOfMemoryError`` naming the system size and ``edge_chunk=``. (A CPU out of
memory is not retried: the operating system may kill the process first.)

An int chunk (``GeoffCalculator(edge_chunk=C)``, ``set_edge_chunk``) keeps its meaning; the
modules always hold an int, so TorchScript export and LAMMPS are unaffected.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from .chunking import DEFAULT_EDGE_CHUNK, EdgeMessages, RowChunked, set_edge_chunk

HEADROOM = 0.15  # share of the available memory left free (fragmentation, estimate error)
# On the CPU the fit counts only what autograd saves (exact there, where peak RSS is allocator
# noise); transients (one layer's temporaries and gradients) come on top: keep half free.
CPU_HEADROOM = 0.5
MIN_CHUNK = 2 ** 12  # edges; smaller chunks cost many launches for little memory
MAX_HALVINGS = 5  # out-of-memory retries before giving up
PROBE_EDGES = 2 ** 16  # edges of the warm-up probe; the measured one has ~twice (MACE: ~10 GB)
CPU_PROBE_EDGES = 2 ** 13  # saved bytes are exact: small probes suffice (and cost ~1 s)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryFit:
    """Predicted peak bytes of one energy+forces call: ``fixed + kept*E + chunked*min(C, E)``.

    ``kept``: bytes per edge held whatever the chunk (geometry, node tensors per edge);
    ``chunked``: bytes per edge of one chunk's activations (what chunking bounds).
    """

    fixed: float
    kept: float
    chunked: float

    def peak(self, n_edges: int, chunk: int) -> float:
        c = n_edges if chunk <= 0 else min(chunk, n_edges)
        return self.fixed + self.kept * n_edges + self.chunked * c


def choose_edge_chunk(n_edges: int, available_bytes: float, fit: MemoryFit,
                      headroom: float = HEADROOM, min_chunk: Optional[int] = None) -> int:
    """Edges per chunk for a graph of ``n_edges``: 0 (no chunking) when the whole graph's
    predicted peak fits in ``(1 - headroom) * available_bytes``, else the largest power of two
    whose predicted peak fits, at least ``min_chunk`` (what fits nothing is left to the
    out-of-memory retry). A power of two keeps the choice stable between calls of one size.
    ``min_chunk`` defaults to ``MIN_CHUNK``."""
    min_chunk = MIN_CHUNK if min_chunk is None else min_chunk
    budget = (1.0 - headroom) * available_bytes
    if fit.peak(n_edges, 0) <= budget or fit.chunked <= 0:
        return 0  # fits, or chunking would not save anything measurable
    room = budget - fit.fixed - fit.kept * n_edges  # bytes left for one chunk's activations
    if room < fit.chunked * min_chunk:
        return min(min_chunk, n_edges)
    chunk = 2 ** int(math.floor(math.log2(room / fit.chunked)))
    return 0 if chunk >= n_edges else max(chunk, min_chunk)


def uses_gpu_memory(device: torch.device) -> bool:
    """Whether calls on ``device`` measure and budget GPU memory (CUDA) or RAM (else)."""
    return device.type == "cuda"


def available_bytes(device: torch.device) -> int:
    """Bytes this process can still allocate on ``device``: the driver's free memory plus
    the blocks PyTorch's caching allocator holds but does not use."""
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def host_available_bytes() -> int:
    """Bytes of RAM the system can still give (``MemAvailable``, Linux; else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def probe_graph(graph: Dict[str, Tensor], n_edges: int) -> Dict[str, Tensor]:
    """The sub-graph of the atoms nearest the centre of ``graph``'s atoms with about
    ``n_edges`` edges (both ends inside; a compact ball, so its atoms keep most of their
    neighbours). A batch of structures smaller than that (replicas, which overlap in space,
    so that a ball would mix them and keep few edges) gives its first whole structures
    instead. Keys as ``geoff.graph`` (``n_local`` is dropped: the probe has no ghosts)."""
    whole = _first_structures(graph, n_edges)
    if whole is not None:
        return whole
    positions, edge_index = graph["positions"], graph["edge_index"]
    n_atoms, total = positions.shape[0], edge_index.shape[1]
    # A ball of k atoms keeps fewer than k * E/N edges (its boundary): ask for a bit more.
    k = min(n_atoms, max(2, int(1.3 * n_edges * n_atoms / max(total, 1))))
    centre = positions.detach().mean(0)
    atoms = torch.topk((positions.detach() - centre).norm(dim=1), k, largest=False).indices
    atoms = atoms.sort().values  # keep the original order (edges stay sorted by receiver)
    new_index = torch.full((n_atoms,), -1, dtype=torch.long, device=positions.device)
    new_index[atoms] = torch.arange(k, device=positions.device)
    mapped = new_index[edge_index]
    keep = (mapped >= 0).all(0)
    sub = {"positions": positions[atoms], "species": graph["species"][atoms],
           "edge_index": mapped[:, keep], "shifts": graph["shifts"][keep]}
    for key in ("cell", "pbc"):
        sub[key] = graph[key]
    if "batch" in graph:
        sub["batch"] = graph["batch"][atoms]
    return sub


def _first_structures(graph: Dict[str, Tensor], n_edges: int) -> Optional[Dict[str, Tensor]]:
    """The first structures of a batch (atoms in structure order, as ``batch_graphs`` and the
    replicas lay them out) holding at least ``n_edges`` edges, or None when ``graph`` is one
    structure, the first structure alone has more than twice ``n_edges`` (a ball of it
    serves), or the atoms are not in structure order."""
    batch = graph.get("batch")
    if batch is None or batch.numel() == 0 or bool((batch[1:] < batch[:-1]).any()):
        return None
    edge_index = graph["edge_index"]
    edge_structure = batch[edge_index[0]]
    per_structure = torch.bincount(edge_structure, minlength=int(batch[-1]) + 1)
    if len(per_structure) < 2 or int(per_structure[0]) > 2 * n_edges:
        return None
    reached = torch.cumsum(per_structure, 0) >= n_edges
    m = int(reached.nonzero()[0]) + 1 if bool(reached.any()) else len(per_structure)
    atoms = int((batch < m).sum())  # structure order: these are the first atoms
    keep = edge_structure < m
    sub = {"positions": graph["positions"][:atoms], "species": graph["species"][:atoms],
           "edge_index": edge_index[:, keep], "shifts": graph["shifts"][keep],
           "batch": batch[:atoms]}
    for key in ("cell", "pbc"):
        sub[key] = graph[key][:m]
    return sub


def chunking_modules(model: nn.Module) -> List[nn.Module]:
    """The modules whose ``edge_chunk`` the choice sets (``EdgeMessages``, ``RowChunked``)."""
    return [m for m in model.modules() if isinstance(m, (EdgeMessages, RowChunked))]


def _peak_bytes(model: nn.Module, graph: Dict[str, Tensor], chunk: int) -> int:
    """Peak bytes one energy+forces call of ``model`` on ``graph`` at ``chunk`` allocates."""
    device = graph["positions"].device
    set_edge_chunk(model, chunk)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = model(graph, compute_forces=True)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return int(peak)


def _saved_bytes(model: nn.Module, graph: Dict[str, Tensor], chunk: int) -> int:
    """Bytes autograd saves for the backward pass of one energy+forces call at ``chunk``
    (each storage once; a checkpointed chunk's activations are not saved: recomputed)."""
    set_edge_chunk(model, chunk)
    storages: Dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(graph, compute_forces=True)
    return sum(storages.values())


def calibrate(model: nn.Module, graph: Dict[str, Tensor], peak_bytes: Callable = _peak_bytes,
              probe_edges: int = PROBE_EDGES, sees_chunk: bool = True) -> MemoryFit:
    """``MemoryFit`` of ``model`` from probes on balls of ``graph`` (module docstring).

    A warm-up call on a ball of ~``probe_edges`` edges (one-time allocations: cuBLAS
    workspace, caches), then a ball of ~2x as many edges, plain and in chunks of 1/8 of its
    edges. The fit is proportional (``fixed`` = 0): what a probe needs is charged to its
    edges, so constant costs and the ball's boundary atoms (fewer edges per atom than the
    bulk) make it err high, never low. ``peak_bytes(model, graph, chunk) -> bytes`` measures
    one call (replaceable for tests); ``sees_chunk``: whether it counts one chunk's
    activations (a peak does; saved bytes do not: they are recomputed). Restores the
    modules' chunks afterwards."""
    saved = [m.edge_chunk for m in chunking_modules(model)]
    try:
        large = probe_graph(graph, 2 * probe_edges)
        edges = large["edge_index"].shape[1]
        if edges < probe_edges:
            raise ValueError(f"calibration needs a graph of more than {2 * probe_edges} edges")
        peak_bytes(model, probe_graph(graph, probe_edges), 0)  # warm-up
        plain = peak_bytes(model, large, 0)
        chunk = max(edges // 8, 1)
        chunked_call = peak_bytes(model, large, chunk)
    finally:
        for m, c in zip(chunking_modules(model), saved):
            m.edge_chunk = c
    total = max(plain, 0) / edges  # bytes per edge, plain
    # plain = (kept + chunked) E; chunked_call = kept E + chunked C (C only if it is seen)
    chunked = (plain - chunked_call) / (edges - chunk if sees_chunk else edges)
    chunked = min(max(chunked, 0.0), total)
    return MemoryFit(fixed=0.0, kept=total - chunked, chunked=chunked)


def _halved(chunk: int, n_edges: int) -> int:
    """The next chunk after an out-of-memory error at ``chunk`` (0 = the whole graph)."""
    base = n_edges if chunk <= 0 else min(chunk, n_edges)
    return 2 ** int(math.floor(math.log2(max(base // 2, 1))))


class AutoChunk:
    """Calls ``run(graph, **kwargs)`` with the edge chunk of ``model`` chosen per call.

    ``run``: the model or a wrapper calling it (e.g. ``geoff.cuda_graphs.GraphedModel``);
    ``model``: what the chunk is set on and the calibration probes call (no wrapper). Set
    the model's kernels before (the chunking modules are looked up once). ``last_chunk``:
    the chunk of the last call (None: no call yet, or no chunking modules). Module docstring.
    """

    def __init__(self, model: nn.Module, run: Optional[Callable] = None):
        self.model, self.run = model, run if run is not None else model
        self.modules = chunking_modules(model)
        self.fits: Dict[tuple, MemoryFit] = {}
        self.cap: Optional[int] = None  # edges: a chunk that ran out of memory, halved
        self.last_chunk: Optional[int] = None
        self._warned = False

    def chunk_for(self, graph: Dict[str, Tensor]) -> Optional[int]:
        """Edges per chunk for ``graph`` (0 = none), or None: the model has nothing to chunk."""
        device = graph["positions"].device
        if not self.modules:
            return None
        n_edges = int(graph["edge_index"].shape[1])
        gpu = uses_gpu_memory(device)
        if n_edges <= DEFAULT_EDGE_CHUNK:
            chunk = 0  # what the static default does too: no calibration for small graphs
        else:
            fit = self._fit(graph, gpu)
            if fit is None:
                chunk = DEFAULT_EDGE_CHUNK
            elif gpu:
                chunk = choose_edge_chunk(n_edges, available_bytes(device), fit)
            else:
                chunk = choose_edge_chunk(n_edges, host_available_bytes(), fit, CPU_HEADROOM)
        if self.cap is not None and self.cap < n_edges and (chunk == 0 or chunk > self.cap):
            chunk = self.cap
        return chunk

    def _fit(self, graph: Dict[str, Tensor], gpu: bool) -> Optional[MemoryFit]:
        positions = graph["positions"]
        key = (str(positions.device), positions.dtype, tuple(type(m) for m in self.modules))
        if key not in self.fits:
            how = {} if gpu else {"peak_bytes": _saved_bytes, "probe_edges": CPU_PROBE_EDGES,
                                  "sees_chunk": False}
            try:
                self.fits[key] = calibrate(self.model, graph, **how)
            except (torch.cuda.OutOfMemoryError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            if key not in self.fits:  # outside the except block: its traceback holds memory
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self._warn(f"edge_chunk='auto': the memory calibration failed ({reason}); "
                           f"using chunks of {DEFAULT_EDGE_CHUNK} edges")
                return None
        return self.fits[key]

    def _set(self, chunk: int) -> None:
        if chunk != self.last_chunk:
            log.info("edge_chunk='auto': %s",
                     f"chunks of {chunk} edges" if chunk else "no chunking")
        for m in self.modules:
            m.edge_chunk = chunk
        self.last_chunk = chunk

    def __call__(self, graph: Dict[str, Tensor], **kwargs):
        chunk = self.chunk_for(graph)
        if chunk is None:
            return self.run(graph, **kwargs)
        for attempt in range(MAX_HALVINGS + 1):
            self._set(chunk)
            try:
                return self.run(graph, **kwargs)
            except torch.cuda.OutOfMemoryError:
                pass  # retried below, once the failed call's tensors are released
            chunk = self._after_out_of_memory(chunk, graph, attempt)
        raise AssertionError("unreachable: the last attempt raises")

    def _after_out_of_memory(self, chunk: int, graph: Dict[str, Tensor], attempt: int) -> int:
        n_atoms, n_edges = graph["positions"].shape[0], int(graph["edge_index"].shape[1])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        smaller = _halved(chunk, n_edges)
        if attempt >= MAX_HALVINGS or smaller < MIN_CHUNK:
            tried = "the whole graph" if chunk <= 0 else f"chunks of {chunk} edges"
            raise torch.cuda.OutOfMemoryError(
                f"edge_chunk='auto': out of GPU memory for {n_atoms} atoms ({n_edges} edges) "
                f"even in {tried}, after {attempt + 1} tries; free GPU memory (other "
                f"processes), split the system (LAMMPS with several GPUs), or set "
                f"edge_chunk= yourself (e.g. GeoffCalculator(edge_chunk={MIN_CHUNK}))")
        self.cap = smaller
        self._warn(f"edge_chunk='auto': out of GPU memory at {n_atoms} atoms ({n_edges} edges) "
                   f"with {'no chunking' if chunk <= 0 else f'chunks of {chunk} edges'}; "
                   f"retrying with chunks of {smaller} edges (at most that from now on; "
                   f"edge_chunk= sets it yourself)")
        return smaller

    def _warn(self, message: str) -> None:
        if not self._warned:  # once per calculator: MD calls it every step
            self._warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=3)


def edge_chunking(model: nn.Module, edge_chunk, run: Callable) -> Optional[AutoChunk]:
    """The option ``edge_chunk`` of ``GeoffCalculator`` and ``BatchedForces`` applied to
    ``model``: ``"auto"`` returns the ``AutoChunk`` to call instead of ``run``; an int sets
    that many edges per chunk (0: never), None keeps the model's default (both: None)."""
    if edge_chunk == "auto":
        return AutoChunk(model, run)
    if edge_chunk is not None:
        set_edge_chunk(model, edge_chunk)
    return None

"""Energy, forces and stress of an EnergyModel through captured CUDA graphs.

A small system is launch-bound on a GPU: an energy+forces call of a few hundred atoms is
hundreds of tiny kernels whose launches cost more than their work. A CUDA graph records those
launches once and replays them as one. A graph has fixed shapes, so ``GraphedModel`` pads
every input graph to a *bucket* (atoms and edges rounded up on a geometric grid, structures
to a power of two) and keeps one captured graph per bucket:

* **Padding changes no result.** The padding atoms form one extra structure (index B, after
  the B real ones; any further padded structures are empty), species 0 at the origin. Every
  padding edge is a self-loop of a padding atom with a shift of ``2 * cutoff + 1`` Å along x,
  longer than the cutoff (the envelope zeroes its message), and it connects padding atoms
  only, so no message, sum or gradient reaches a real atom. Per-structure sums see the
  padding structure only in its own row, which is dropped. Checked per model in float64
  against the unpadded call (``tests/test_cuda_graphs.py``).
* **Static buffers.** Each bucket owns its input tensors (positions, species, batch,
  edge index, shifts, cell, pbc); a call copies the graph in (skipping a tensor that is the
  very one copied last and unchanged since), fills the padded tail, replays,
  and returns clones of the outputs cut to the real atoms and structures (clones: the graphs
  share one private memory pool, so an output is overwritten by the next replay).
* **Capture** as torch documents it: warm-up calls on a side stream, then capture on that
  stream (``torch.cuda.graph``), one memory pool shared by all buckets (never replayed
  concurrently); at most ``max_buckets`` graphs kept (least recently used dropped).
* **Fallback to the eager model, never a failure:** on the CPU, for models whose shapes
  depend on the data (``REFUSED``), in training mode, for graphs with other keys than the
  buffers' (LAMMPS's ``n_local``), positions that already require grad, no grad mode,
  above ``max_atoms``, when the model would take its chunked path (``edge_chunk`` below the
  padded edge count: that path synchronises with the host), and when a capture raises (the
  bucket is remembered as failed and a warning says why).

Neighbour lists are not captured: they are built before the call (and reused with a skin by
``NeighbourCache``); only the model runs in the graph.
"""
from __future__ import annotations

import gc
import math
import warnings
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .graph import (BATCH, CELL, EDGE_INDEX, EDGE_PAIR, PAIR_FIRST, PBC, POSITIONS, SHIFTS,
                    SPECIES, Graph)

# Representations that cannot be captured, and why (keyed by class name: no import needed).
REFUSED = {
    "DimeNetPP": "triplets are built inside the model (argsort, bincount, repeat_interleave): "
                 "their count depends on the data and needs the host",
    "GemNet": "triplets and quadruplets are built inside the model (nonzero, bincount): their "
              "count depends on the data and needs the host",
    "FAENet": "PCA frames use torch.linalg.eigh, which synchronises with the host on CUDA",
}

# Above this many atoms an energy+forces call is no longer launch-bound (see
# benchmarks/results/speed.md, "CUDA graphs"): "auto" runs it eagerly.
# measured on an H200 (benchmarks/results/cuda_graphs_h200): capture pays 1.3-11x up to 864
# atoms, 0.9-1.3x at 2,048 and nothing at 8,788, so "auto" stops below 2,000
DEFAULT_MAX_ATOMS = 1_500
# "auto" captures a bucket on its second call: MD repeats one bucket every step, while a
# loop over structures of many sizes would capture each once and replay it never
AUTO_CAPTURE_AFTER = 2
DEFAULT_MAX_BUCKETS = 8
ATOM_FLOOR, EDGE_FLOOR = 32, 256  # smallest buckets
CAPTURE_MEMORY_FRACTION = 0.8  # of the free GPU memory a new captured graph may keep
GROWTH = 1.25  # bucket to bucket: at most 25 % padding
WARMUP_CALLS = 3

INPUT_KEYS = {POSITIONS, SPECIES, BATCH, EDGE_INDEX, SHIFTS, CELL, PBC}  # the static buffers
PAIR_KEYS = {EDGE_PAIR, PAIR_FIRST}  # optional (graph.add_edge_pairs): not padded
PER_STRUCTURE = ("energy", "stress", "virial")  # outputs (B, ...); all others are per atom


class Sightings:
    """Calls of shapes not captured yet: ``due(key)`` is True from a key's ``after``-th call
    on (``after`` 1: at once), so that ``"auto"`` captures only what repeats."""

    def __init__(self, after: int = 1):
        self.after = int(after)
        self._seen: Dict[tuple, int] = {}

    def due(self, key) -> bool:
        if self.after <= 1:
            return True
        if len(self._seen) > 1024:  # a long screening run's one-off shapes
            self._seen.clear()
        seen = self._seen[key] = self._seen.get(key, 0) + 1
        return seen >= self.after


def padding_shift(cutoff: float, dtype: torch.dtype, device) -> Tensor:
    """(3,) Å: the shift of every padding edge, longer than the cutoff along x, so that
    the envelope zeroes its message."""
    shift = torch.zeros(3, dtype=dtype, device=device)
    shift[0] = 2.0 * cutoff + 1.0
    return shift


def padding_atoms(n, n_atoms: int, slots: Tensor) -> Tensor:
    """The padding atom (index n .. n_atoms - 1) of each padding edge slot, spread over
    them (fewer atomic collisions in the sums); ``n``: the real atoms, an int or a 0-d
    tensor."""
    return n + slots % (n_atoms - n)


def bucket_size(n: int, floor: int, growth: float = GROWTH) -> int:
    """The smallest ``floor * growth**k`` (k >= 0, rounded up to a multiple of 8) >= ``n``."""
    size = floor
    while size < n:
        size = int(math.ceil(size * growth / 8.0)) * 8
    return size


def structure_bucket(n_structures: int) -> int:
    """Structures padded to a power of two >= ``n_structures`` + 1 (the padding structure)."""
    return 1 << int(n_structures).bit_length()


def refusal(model) -> Optional[str]:
    """Why ``model`` cannot run in a CUDA graph at all, or None when it can."""
    name = type(getattr(model, "representation", model)).__name__
    if name in REFUSED:
        return f"{name}: {REFUSED[name]}"
    if model.training:
        return "the model is in training mode (call model.eval(); training needs the graph)"
    return None


def takes_chunked_path(model, n_atoms: int, n_edges: int) -> bool:
    """Whether ``model`` runs a graph of this size in checkpointed chunks
    (``potentials/chunking.py``), whose bounds are read back to the host: not capturable."""
    from .potentials.chunking import EdgeMessages, RowChunked

    for m in model.modules():
        if isinstance(m, EdgeMessages) and 0 < m.edge_chunk < n_edges:
            return True
        if isinstance(m, RowChunked) and 0 < m.edge_chunk // m.atom_weight < n_atoms:
            return True
    return False


class PaddedInputs:
    """Static input buffers of one bucket: ``n_atoms``, ``n_edges``, ``n_structures``.

    ``fill(graph)`` copies a smaller graph in and writes the padding (module docstring);
    ``graph`` is the padded Graph (the same tensors every call, as a CUDA graph needs).
    """

    def __init__(self, n_atoms: int, n_edges: int, n_structures: int, cutoff: float,
                 dtype: torch.dtype, device: torch.device):
        def zeros(*shape, dtype=dtype):
            return torch.zeros(shape, dtype=dtype, device=device)

        self.sizes = (n_atoms, n_edges, n_structures)
        self.graph: Graph = {
            POSITIONS: zeros(n_atoms, 3), SPECIES: zeros(n_atoms, dtype=torch.long),
            BATCH: zeros(n_atoms, dtype=torch.long),
            EDGE_INDEX: zeros(2, n_edges, dtype=torch.long), SHIFTS: zeros(n_edges, 3),
            CELL: zeros(n_structures, 3, 3), PBC: zeros(n_structures, 3, dtype=torch.bool)}
        self._edge_ids = torch.arange(n_edges, device=device)
        self._pad_shifts = padding_shift(cutoff, dtype, device).expand(n_edges, 3)
        self._last = (-1, -1, -1)  # sizes of the last fill
        self._sources: Dict[str, Tuple[Tensor, int]] = {}  # key: (tensor, version) copied last

    def fits(self, n: int, e: int, b: int) -> bool:
        n_atoms, n_edges, n_structures = self.sizes
        return n < n_atoms and e <= n_edges and b < n_structures

    def fill(self, graph: Graph) -> Tuple[int, int]:
        """Copy ``graph`` into the buffers; (real atoms, real structures)."""
        n, e, b = _sizes(graph)
        if not self.fits(n, e, b):
            raise ValueError(f"graph of {n} atoms, {e} edges, {b} structures does not fit "
                             f"the bucket {self.sizes} (needs one spare atom and structure)")
        g = self.graph
        n_atoms = self.sizes[0]
        # The tails depend on the sizes only: rewritten when those change (MD: the edges)
        last_n, last_e, last_b = self._last
        self._copy(graph, POSITIONS, g[POSITIONS][:n])
        self._copy(graph, SPECIES, g[SPECIES][:n])
        self._copy(graph, BATCH, g[BATCH][:n])
        if n != last_n or b != last_b:
            g[POSITIONS][n:].zero_()
            g[SPECIES][n:].zero_()
            g[BATCH][n:].fill_(b)  # the padding structure
        self._copy(graph, EDGE_INDEX, g[EDGE_INDEX][:, :e])
        self._copy(graph, SHIFTS, g[SHIFTS][:e])
        if e != last_e or n != last_n:
            # padding edges: self-loops spread over the padding atoms (fewer atomic collisions)
            g[EDGE_INDEX][:, e:].copy_(padding_atoms(n, n_atoms, self._edge_ids[e:])
                                       .expand(2, -1))
            g[SHIFTS][e:].copy_(self._pad_shifts[e:])
        self._copy(graph, CELL, g[CELL][:b])
        self._copy(graph, PBC, g[PBC][:b])
        if b != last_b:
            g[CELL][b:].zero_()
            g[PBC][b:].zero_()
        self._last = (n, e, b)
        return n, b

    def _copy(self, graph: Graph, key: str, buffer: Tensor) -> None:
        """``graph[key]`` into ``buffer``, unless the same tensor, unchanged, was copied last
        (an MD step that keeps its Graph, ``geoff.step_graph``, sends new positions only)."""
        source = graph[key]
        last = self._sources.get(key)
        if last is not None and last[0] is source and last[1] == source._version:
            return
        buffer.copy_(source)
        self._sources[key] = (source, source._version)


def _sizes(graph: Graph) -> Tuple[int, int, int]:
    """(atoms, edges, structures) of a Graph."""
    return (int(graph[POSITIONS].shape[0]), int(graph[EDGE_INDEX].shape[1]),
            int(graph[CELL].shape[0]))


def pad_graph(graph: Graph, n_atoms: int, n_edges: int, n_structures: int,
              cutoff: float) -> Graph:
    """A padded copy of ``graph`` (what a bucket's model sees); for tests and inspection."""
    positions = graph[POSITIONS]
    inputs = PaddedInputs(n_atoms, n_edges, n_structures, cutoff, positions.dtype,
                          positions.device)
    inputs.fill(graph)
    return inputs.graph


def unpad(out: Dict[str, Tensor], n_atoms: int, n_structures: int) -> Dict[str, Tensor]:
    """Outputs of a padded call cut to the real atoms and structures (clones)."""
    return {key: (value[:n_structures] if key in PER_STRUCTURE else value[:n_atoms]).clone()
            for key, value in out.items()}


class CapturePool:
    """The memory pool and side stream of one owner's captured graphs (a calculator's
    buckets: never replayed concurrently, each one's outputs read or cloned before the next
    replay, so they may share the memory of their intermediates)."""

    def __init__(self):
        self.pool = None
        self.stream: Optional["torch.cuda.Stream"] = None

    def capture(self, call, device) -> Tuple["torch.cuda.CUDAGraph", Dict[str, Tensor]]:
        """``call()`` warmed up and captured: (graph, its outputs), as torch documents it:
        warm-up calls on the side stream, then capture on that stream (lazily created
        library handles and autograd's stream bookkeeping then belong to it).

        Python's garbage collector is run before and held off during the capture: a
        collection inside it that frees an older captured graph (a calculator dropped in
        a reference cycle) destroys that graph's CUDA objects, which invalidates the
        capture (``operation not permitted when stream is capturing``; seen on an H200 in
        2 of 48 calculators made in a loop, speed.md "Fifteenth session"). A capture that
        fails anyway leaves its pool recording, so the next one starts a new pool."""
        from .potentials.autochunk import available_bytes

        device = torch.device(device)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
            self.stream = torch.cuda.Stream(device=device)
        stream = self.stream
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                call()
        torch.cuda.current_stream().wait_stream(stream)
        # A graph keeps what its call allocates in the pool: refuse (the caller runs the
        # size uncaptured) rather than run out of memory inside a capture, which can leave
        # the process unusable (speed.md, "Fourteenth session")
        torch.cuda.synchronize(device)
        need = torch.cuda.max_memory_allocated(device) - before
        free = available_bytes(device)
        if need > CAPTURE_MEMORY_FRACTION * free:
            raise MemoryError(f"a captured graph would keep ~{need / 2**30:.2f} GiB in its pool "
                              f"with {free / 2**30:.2f} GiB free")
        graph = torch.cuda.CUDAGraph()
        gc.collect()
        collecting = gc.isenabled()
        gc.disable()
        try:
            with torch.cuda.graph(graph, pool=self.pool, stream=stream):
                outputs = call()
        except BaseException:
            self.pool, self.stream = None, None
            raise
        finally:
            if collecting:
                gc.enable()
        return graph, outputs


class _Bucket:
    """One bucket: its static inputs and, on CUDA, the captured graph and its outputs."""

    def __init__(self, model, inputs: PaddedInputs, compute_forces: bool,
                 compute_stress: bool):
        self.model = model
        self.inputs = inputs
        self.flags = (compute_forces, compute_stress)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.outputs: Dict[str, Tensor] = {}

    def _call(self) -> Dict[str, Tensor]:
        forces, stress = self.flags
        return self.model(self.inputs.graph, compute_forces=forces, compute_stress=stress)

    def run(self, graph: Graph) -> Dict[str, Tensor]:
        """Outputs of ``graph`` (replayed if captured, else the eager model on the buffers)."""
        n, b = self.inputs.fill(graph)
        if self.graph is None:
            out = self._call()
        else:
            self.graph.replay()
            out = self.outputs
        return unpad(out, n, b)


class GraphedModel:
    """``model(graph, compute_forces, compute_stress)`` through per-bucket CUDA graphs.

    Args:
        model: an ``EnergyModel`` in eval mode (e.g. ``geoff.inference.frozen``).
        max_atoms: larger graphs run eagerly (None: no limit).
        max_buckets: captured graphs kept (least recently used dropped beyond it).
        pad_only: pad to buckets and use the static buffers but run the model eagerly, no
            capture (works on the CPU: how the tests check the padding path).
        capture_after: a bucket is captured on its ``capture_after``-th call; the calls
            before run eagerly (``"auto"``: 2, so that sizes met once are never captured).

    Call it as the model: it returns the model's outputs for the real atoms and structures.
    ``stats`` counts replays, captures, eager calls and failed captures.
    """

    def __init__(self, model, max_atoms: Optional[int] = DEFAULT_MAX_ATOMS,
                 max_buckets: int = DEFAULT_MAX_BUCKETS, pad_only: bool = False,
                 capture_after: int = 1):
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
        self.model = model
        self.sightings = Sightings(capture_after)  # calls of buckets not yet made
        self.max_atoms = max_atoms
        self.max_buckets = int(max_buckets)
        self.pad_only = pad_only
        self.refused = refusal(model)
        self.buckets: "OrderedDict[tuple, _Bucket]" = OrderedDict()
        self.failed: Dict[tuple, str] = {}
        self.stats = {"replays": 0, "captures": 0, "eager": 0, "failed": 0}
        self.captures = CapturePool()  # shared with the calculator's CapturedCall

    def __call__(self, graph: Graph, compute_forces: bool = True,
                 compute_stress: bool = False) -> Dict[str, Tensor]:
        key = self._key(graph, compute_forces, compute_stress)
        if key is None or key in self.failed:
            self.stats["eager"] += 1
            return self.model(graph, compute_forces=compute_forces,
                              compute_stress=compute_stress)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self._new_bucket(key, graph) if self.sightings.due(key) else None
            if bucket is None:
                self.stats["eager"] += 1
                return self.model(graph, compute_forces=compute_forces,
                                  compute_stress=compute_stress)
        self.buckets.move_to_end(key)
        self.stats["replays"] += bucket.graph is not None
        return bucket.run(graph)

    def _key(self, graph: Graph, compute_forces: bool, compute_stress: bool):
        """The bucket of ``graph``, or None when it runs eagerly (see the module docstring)."""
        positions = graph[POSITIONS]
        device = positions.device
        # other keys (n_local of LAMMPS, ...) are not in the static buffers; edge pairs are
        # left behind (the padded graph takes the per-edge path: same numbers)
        if self.refused is not None or self.model.training \
                or not set(graph) - PAIR_KEYS <= INPUT_KEYS:
            return None
        if positions.requires_grad or not torch.is_grad_enabled():
            return None  # a caller's own autograd graph (Jacobians) or no grad: eager semantics
        if device.type != "cuda" and not self.pad_only:
            return None
        n, e, b = _sizes(graph)
        if self.max_atoms is not None and n > self.max_atoms:
            return None
        return (bucket_size(n + 1, ATOM_FLOOR), bucket_size(max(e, 1), EDGE_FLOOR),
                structure_bucket(b),
                bool(compute_forces), bool(compute_stress), positions.dtype, device)

    def _new_bucket(self, key: tuple, graph: Graph) -> Optional[_Bucket]:
        n_atoms, n_edges, n_structures, forces, stress, dtype, device = key
        if takes_chunked_path(self.model, n_atoms, n_edges):  # checked once per bucket
            self.failed[key] = "the model takes its chunked path at this size (edge_chunk)"
            return None
        while len(self.buckets) >= self.max_buckets:
            self.buckets.popitem(last=False)  # its graph's memory returns to the pool
        inputs = PaddedInputs(n_atoms, n_edges, n_structures, float(self.model.cutoff),
                              dtype, device)
        bucket = _Bucket(self.model, inputs, forces, stress)
        if not self.pad_only:
            inputs.fill(graph)  # warm-up and capture on real numbers, not zeros
            try:
                bucket.graph, bucket.outputs = self.captures.capture(bucket._call, device)
            except Exception as exc:  # never fail: this bucket runs eagerly from now on
                self.failed[key] = f"{type(exc).__name__}: {exc}"
                self.stats["failed"] += 1
                warnings.warn(f"CUDA graph capture failed for {n_atoms} atoms, {n_edges} "
                              f"edges ({self.failed[key]}); this size runs eagerly",
                              RuntimeWarning, stacklevel=3)
                return None
            self.stats["captures"] += 1
        self.buckets[key] = bucket
        return bucket


def graphed(model, cuda_graphs, device) -> object:
    """``model`` or a ``GraphedModel`` around it, for the option ``cuda_graphs``.

    ``True``: capture on CUDA at every size; ``"auto"``: on CUDA up to ``DEFAULT_MAX_ATOMS``,
    a bucket on its second call (``AUTO_CAPTURE_AFTER``); ``False``: eager. On the CPU every
    value runs eagerly (nothing to capture).
    """
    if cuda_graphs not in (True, False, "auto"):
        raise ValueError(f"cuda_graphs must be True, False or 'auto', got {cuda_graphs!r}")
    if cuda_graphs is False or torch.device(device).type != "cuda":
        return model
    reason = refusal(model)
    if reason is not None:
        if cuda_graphs is True:
            warnings.warn(f"cuda_graphs=True: this model runs eagerly ({reason})",
                          RuntimeWarning, stacklevel=3)
        return model
    auto = cuda_graphs == "auto"
    return GraphedModel(model, max_atoms=DEFAULT_MAX_ATOMS if auto else None,
                        capture_after=AUTO_CAPTURE_AFTER if auto else 1)

"""A small structure's whole calculator call in one CUDA graph: neighbour search and model.

``geoff.cuda_graphs`` captures the model, but a structure the calculator has not seen still
pays for its neighbour search outside the graph: some 25 kernel launches, a host
synchronisation (the ``nonzero`` whose edge count sizes the Graph) and the Graph's
assembly, ~2.6 ms at 864 atoms on an H200 beside a 4.8 ms eager SchNet
(``benchmarks/results/speed.md``). ``CapturedCall`` moves the search into the graph, for a
structure that ``geoff.neighbours.all_pairs`` serves (a molecule, or a periodic cell every
height of which is at least two cutoffs) of up to ``max_atoms`` atoms:

* every pair is examined on the device as ``all_pairs`` does (float64, minimum image), and
  the edges are compacted by ``torch.nonzero_static`` into a fixed number of slots, the
  bucket's *capacity*: no host synchronisation, so search and model replay as one graph;
* padding as in ``geoff.cuda_graphs``: padding atoms (species 0, at the origin, a structure
  of their own) are kept out of the search, and each unused edge slot is a self-loop of a
  padding atom with a shift longer than the cutoff, whose message the envelope zeroes: no
  result changes;
* the edge count and the shortest edge (``[count, d^2, i, j]``) come back with the results
  in the calculator's one transfer (``check``): a structure with more edges than the
  capacity makes the bucket grow and the call run again; a shortest edge under the overlap
  threshold raises the calculator's ``OverlapError`` naming the atoms.

A bucket is (atoms rounded up on the grid of ``geoff.cuda_graphs``, capacity, periodic or
not, forces, stress); its capacity is the first structure's edge count (read once, when the
bucket is made) times ``HEADROOM``, rounded up on the same grid. Anything else (a slab, a
small or large cell, non-finite positions, models that cannot be captured, a failed capture)
takes the calculator's usual path, whose checks and errors stay as they are.
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .cuda_graphs import (ATOM_FLOOR, DEFAULT_MAX_BUCKETS, EDGE_FLOOR, PER_STRUCTURE,
                          WARMUP_CALLS, bucket_size, takes_chunked_path)
from .graph import (BATCH, CELL, EDGE_INDEX, MAX_NEIGHBOURS_PER_ATOM, PBC, POSITIONS, SHIFTS,
                    SPECIES, _Symbols, atoms_species)
from .neighbours import ALL_PAIRS_MAX_ATOMS, all_pairs_apply
from .structure_checks import check_edge_lengths
from .to_device import to_device

# Up to this many atoms "auto" captures the search with the model: the all-pairs search's
# (N, N, 3) float64 temporaries stay under ~60 MB and its GPU time under the launches it saves
DEFAULT_MAX_ATOMS = 1_500
HEADROOM = 1.05  # edge slots beyond the first structure's count (thermal density changes)
SUMMARY = "search_summary"  # the output key of [count, d^2, i, j]


def available() -> bool:
    """Whether this torch has ``nonzero_static`` (a sync-free compaction on CUDA)."""
    return hasattr(torch, "nonzero_static")


class _Inputs:
    """Static inputs of one bucket: ``n_atoms`` slots (the real atoms first), one structure."""

    def __init__(self, n_atoms: int, dtype: torch.dtype, device: torch.device):
        def zeros(*shape, dtype=torch.float64):
            return torch.zeros(shape, dtype=dtype, device=device)

        self.x = zeros(n_atoms, 3)  # float64 Å: the search's
        self.species = zeros(n_atoms, dtype=torch.long)
        self.batch = zeros(n_atoms, dtype=torch.long)
        self.real = zeros(n_atoms, dtype=torch.bool)
        self.n = torch.zeros((), dtype=torch.long, device=device)  # real atoms
        # the structure and the padding atoms' one (zero cell), as geoff.cuda_graphs pads
        self.cell = zeros(2, 3, 3, dtype=dtype)
        self.pbc = zeros(2, 3, dtype=torch.bool)
        self.mats = zeros(2, 3, 3)  # the cell's rows and their inverse, float64
        self._n = -1
        self._numbers: Optional[np.ndarray] = None
        self._cell: Optional[bytes] = None

    def fill(self, atoms, species: np.ndarray) -> int:
        """Copy ``atoms`` in (positions always; species, cell and sizes when they change)."""
        n = len(atoms)
        self.x[:n].copy_(to_device(atoms.positions, self.x.device, torch.float64))
        if n != self._n:
            self.x[n:].zero_()
            self.batch[:n].zero_()
            self.batch[n:].fill_(1)  # the padding structure
            self.real[:n].fill_(True)
            self.real[n:].fill_(False)
            self.n.fill_(n)
            self.species[n:].zero_()
            self._numbers = None
        if self._numbers is None or not np.array_equal(atoms.numbers, self._numbers):
            self.species[:n].copy_(to_device(species, self.x.device))
            self._numbers = np.array(atoms.numbers)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool).reshape(3)
        key = cell.tobytes() + pbc.tobytes()
        if key != self._cell:
            self.cell[0].copy_(to_device(cell, self.x.device, self.cell.dtype))
            self.pbc[0].copy_(to_device(pbc, self.x.device))
            if pbc.all():
                self.mats.copy_(to_device(np.stack([cell, np.linalg.inv(cell)]),
                                          self.x.device))
            self._cell = key
        self._n = n
        return n


def _pair_mask(inputs: _Inputs, periodic: bool, cutoff: float
               ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """(keep (N, N) bool, r^2 (N, N) Å^2, rounded fractional differences (N, N, 3) or None)
    over the bucket's slots: pairs of real atoms within ``cutoff``, as ``all_pairs``."""
    x = inputs.x
    n = x.shape[0]
    near = None
    if periodic:
        frac = x @ inputs.mats[1]
        d = frac[None, :, :] - frac[:, None, :]  # frac_j - frac_i
        near = torch.round(d)
        r = (d - near).view(-1, 3) @ inputs.mats[0]
    else:
        r = (x[None, :, :] - x[:, None, :]).view(-1, 3)
    r2 = r.square().sum(-1).view(n, n)
    keep = (r2 < cutoff * cutoff) & inputs.real[:, None] & inputs.real[None, :]
    keep.fill_diagonal_(False)
    return keep, r2, near


class _Bucket:
    """One bucket's inputs, capacity and captured graph (search + model)."""

    def __init__(self, model, inputs: _Inputs, capacity: int, periodic: bool, cutoff: float,
                 dtype: torch.dtype, compute_forces: bool, compute_stress: bool):
        self.model, self.inputs, self.capacity = model, inputs, capacity
        self.periodic, self.cutoff, self.dtype = periodic, cutoff, dtype
        self.flags = (compute_forces, compute_stress)
        device = inputs.x.device
        self._slots = torch.arange(capacity, device=device)
        self._pad_shift = torch.zeros(3, dtype=torch.float64, device=device)
        self._pad_shift[0] = 2.0 * cutoff + 1.0  # longer than the cutoff: zero messages
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.outputs: Dict[str, Tensor] = {}

    def _call(self) -> Dict[str, Tensor]:
        b, n_slots = self.inputs, self.inputs.x.shape[0]
        keep, r2, near = _pair_mask(b, self.periodic, self.cutoff)
        count = keep.sum()
        rows = torch.nonzero_static(keep.view(-1), size=self.capacity, fill_value=0).squeeze(1)
        valid = self._slots < count
        i = torch.div(rows, n_slots, rounding_mode="floor")
        j = rows - i * n_slots
        pad = b.n + self._slots % (n_slots - b.n)  # unused slots: spread over padding atoms
        i, j = torch.where(valid, i, pad), torch.where(valid, j, pad)
        if near is not None:
            shifts = near.view(-1, 3)[rows].neg() @ b.mats[0]
        else:
            shifts = torch.zeros(self.capacity, 3, dtype=torch.float64, device=b.x.device)
        shifts = torch.where(valid[:, None], shifts, self._pad_shift)
        d2 = torch.where(keep, r2, torch.full_like(r2, math.inf)).view(-1)
        k = torch.argmin(d2).view(1)  # (1,): a 0-d index would be read on the host
        summary = torch.cat([count.double().view(1), d2.index_select(0, k),
                             torch.div(k, n_slots, rounding_mode="floor").double(),
                             (k % n_slots).double()])
        graph = {POSITIONS: b.x.to(self.dtype), SPECIES: b.species, BATCH: b.batch,
                 EDGE_INDEX: torch.stack([i, j]), SHIFTS: shifts.to(self.dtype), CELL: b.cell,
                 PBC: b.pbc}
        forces, stress = self.flags
        out = dict(self.model(graph, compute_forces=forces, compute_stress=stress))
        out[SUMMARY] = summary
        return out

    def capture(self, pool, stream: "torch.cuda.Stream") -> None:
        """Warm up and capture on ``stream``, as ``geoff.cuda_graphs`` does."""
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                self._call()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, stream=stream):
            outputs = self._call()
        self.graph, self.outputs = graph, outputs

    def run(self, atoms, species: np.ndarray) -> Dict[str, Tensor]:
        n = self.inputs.fill(atoms, species)
        if self.graph is None:  # pad_only
            self.outputs = self._call()
        else:
            self.graph.replay()
        return {key: value if key == SUMMARY else value[:1] if key in PER_STRUCTURE
                else value[:n] for key, value in self.outputs.items()}


class CapturedCall:
    """``call(atoms, compute_forces, compute_stress) -> outputs`` of one structure through
    one CUDA graph holding its neighbour search and the model (module docstring).

    Args:
        model: the calculator's model (eval mode; compiled or not), on a CUDA device.
        min_distance: the overlap threshold, Å (0: no check); above the cutoff no structure
            is taken (the check would search beyond the graph's edges).
        dtype, device: the model's.
        max_atoms: larger structures are not taken (``ALL_PAIRS_MAX_ATOMS`` at most).
        pad_only: fill the buckets and run search and model on them eagerly, no capture
            (works on the CPU: how the tests check this path).

    ``takes(atoms)`` says (on the host, in microseconds) whether a structure goes this way;
    the outputs are the model's for the real atoms and structure plus ``SUMMARY``, valid
    until the next call; ``check(summary, atoms)`` after reading them back returns False
    when the structure had more edges than its bucket holds (its results are wrong; the
    bucket has grown, call again) and raises on an overlap. ``stats`` counts calls,
    captures, regrown buckets and failed captures (``calls``: replays, or
    eager runs with ``pad_only``).
    """

    def __init__(self, model, min_distance: float, dtype: torch.dtype, device,
                 max_atoms: int = DEFAULT_MAX_ATOMS, pad_only: bool = False):
        self.model, self.dtype, self.device = model, dtype, torch.device(device)
        self.pad_only = pad_only
        self.cutoff = float(model.cutoff)
        self.min_distance = float(min_distance)
        self.max_atoms = min(int(max_atoms), ALL_PAIRS_MAX_ATOMS["cuda"])
        self.species = list(model.species)
        self.buckets: "OrderedDict[tuple, _Bucket]" = OrderedDict()
        self.capacity: Dict[tuple, int] = {}  # per bucket without its capacity: the current
        self.failed: Dict[tuple, str] = {}
        self.stats = {"calls": 0, "captures": 0, "regrown": 0, "failed": 0}
        self._cells: Dict[bytes, bool] = {}
        self._pool = None
        self._stream = None
        self._last: Optional[Tuple[tuple, int]] = None  # (key, atoms) of the last call

    def takes(self, atoms) -> bool:
        """Whether ``atoms`` goes through the captured search (else the calculator's path)."""
        n = len(atoms)
        if not 0 < n <= self.max_atoms or self.min_distance > self.cutoff:
            return False
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool).reshape(3)
        key = cell.tobytes() + pbc.tobytes()
        apply = self._cells.get(key)
        if apply is None:
            apply = bool(np.isfinite(cell).all()) and all_pairs_apply(cell, pbc, self.cutoff)
            if len(self._cells) > 64:
                self._cells.clear()
            self._cells[key] = apply
        return apply and bool(np.isfinite(atoms.positions).all())  # else the usual errors

    @staticmethod
    def _shape(atoms, compute_forces: bool, compute_stress: bool) -> tuple:
        """A bucket's key without its capacity."""
        return (bucket_size(len(atoms) + 1, ATOM_FLOOR), bool(np.asarray(atoms.pbc).all()),
                bool(compute_forces), bool(compute_stress))

    def __call__(self, atoms, compute_forces: bool = True, compute_stress: bool = False
                 ) -> Optional[Dict[str, Tensor]]:
        """The outputs, or None when this bucket cannot be captured (the caller runs its
        usual path; a warning said why once)."""
        species = atoms_species(atoms, self.species)
        shape = self._shape(atoms, compute_forces, compute_stress)
        if shape in self.failed:
            return None
        capacity = self.capacity.get(shape)
        if capacity is None:
            capacity = self._sized(atoms, species, shape)
            if capacity is None:
                return None
        key = shape + (capacity,)
        bucket = self.buckets.get(key) or self._new_bucket(key, atoms, species)
        if bucket is None:
            return None
        self.buckets.move_to_end(key)
        self.stats["calls"] += 1
        self._last = (shape, len(atoms))
        return bucket.run(atoms, species)

    def _sized(self, atoms, species: np.ndarray, shape: tuple) -> Optional[int]:
        """The first capacity of ``shape``'s buckets: this structure's edges (one read)."""
        inputs = _Inputs(shape[0], self.dtype, self.device)
        inputs.fill(atoms, species)
        count = int(_pair_mask(inputs, shape[1], self.cutoff)[0].sum())
        if count > MAX_NEIGHBOURS_PER_ATOM * len(atoms):
            return None  # a unit mistake: the usual path says so
        self.capacity[shape] = bucket_size(max(int(math.ceil(count * HEADROOM)), 1), EDGE_FLOOR)
        return self.capacity[shape]

    def _new_bucket(self, key: tuple, atoms, species: np.ndarray) -> Optional[_Bucket]:
        n_atoms, periodic, forces, stress, capacity = key
        shape = key[:-1]
        if not available():
            self.failed[shape] = "this torch has no torch.nonzero_static"
        elif takes_chunked_path(self.model, n_atoms, capacity):
            self.failed[shape] = "the model takes its chunked path at this size (edge_chunk)"
        if shape in self.failed:
            return None
        while len(self.buckets) >= DEFAULT_MAX_BUCKETS:
            self.buckets.popitem(last=False)
        inputs = _Inputs(n_atoms, self.dtype, self.device)
        inputs.fill(atoms, species)  # warm-up and capture on real numbers
        bucket = _Bucket(self.model, inputs, capacity, periodic, self.cutoff, self.dtype,
                         forces, stress)
        if self.pad_only:
            self.buckets[key] = bucket
            return bucket
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
                self._stream = torch.cuda.Stream(device=self.device)
            bucket.capture(self._pool, self._stream)
        except Exception as exc:  # never fail: this shape takes the usual path from now on
            self.failed[shape] = f"{type(exc).__name__}: {exc}"
            self.stats["failed"] += 1
            warnings.warn(f"CUDA graph capture of the neighbour search and model failed for "
                          f"{n_atoms} atoms ({self.failed[shape]}); this size builds its "
                          "neighbour list outside the graph", RuntimeWarning, stacklevel=3)
            return None
        self.stats["captures"] += 1
        self.buckets[key] = bucket
        return bucket

    def check(self, summary: np.ndarray, atoms) -> bool:
        """After the results came back: False when the structure had more edges than its
        bucket's capacity (the results are void; the next call uses a larger bucket);
        raises ``OverlapError`` naming the closest atoms under the threshold."""
        count, d2, a, b = (float(v) for v in np.asarray(summary).reshape(4))
        shape, _ = self._last
        if count > self.capacity[shape]:
            self.capacity[shape] = bucket_size(int(math.ceil(count * HEADROOM)), EDGE_FLOOR)
            self.stats["regrown"] += 1
            return False
        if self.min_distance > 0 and math.isfinite(d2):
            check_edge_lengths(None, None, None, None, self.min_distance,
                               _Symbols(atoms.numbers),
                               shortest=(math.sqrt(d2), int(a), int(b)))
        return True


def captured_call(model, cuda_graphs, device, dtype: torch.dtype,
                  min_distance: Optional[float] = None) -> Optional[CapturedCall]:
    """The ``CapturedCall`` of ``GeoffCalculator(cuda_graphs=...)``, or None: ``True`` takes
    structures up to ``ALL_PAIRS_MAX_ATOMS["cuda"]`` atoms, ``"auto"`` up to
    ``DEFAULT_MAX_ATOMS``; ``False``, the CPU, models that cannot be captured
    (``geoff.cuda_graphs.refusal``) and a torch without ``nonzero_static`` take none.
    ``min_distance`` None: the model's overlap threshold."""
    from .cuda_graphs import refusal
    from .structure_checks import overlap_threshold

    if cuda_graphs is False or torch.device(device).type != "cuda" or not available() \
            or refusal(model) is not None:
        return None
    if min_distance is None:
        min_distance = overlap_threshold(model)
    max_atoms = DEFAULT_MAX_ATOMS if cuda_graphs == "auto" else ALL_PAIRS_MAX_ATOMS["cuda"]
    return CapturedCall(model, min_distance, dtype, device, max_atoms=max_atoms)

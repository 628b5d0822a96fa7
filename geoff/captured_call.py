"""A structure's whole calculator call in one CUDA graph: neighbour search and model.

``geoff.cuda_graphs`` captures the model, but a structure the calculator has not seen still
pays for its neighbour search outside the graph: some 25 kernel launches, one or two host
synchronisations (the ``nonzero`` whose edge count sizes the Graph; the fullest bin) and the
Graph's assembly, ~2.6 ms at 864 atoms on an H200 beside a 4.8 ms eager SchNet
(``benchmarks/results/speed.md``). ``CapturedCall`` moves the search into the graph:

* a molecule, or a periodic cell every height of which is at least two cutoffs, of up to
  ``ALL_PAIRS_MAX_ATOMS["cuda"]`` atoms: every pair examined as ``geoff.neighbours.all_pairs``
  does (float64, minimum image);
* any other fully periodic cell (small, triclinic, or more atoms): the cell list of
  ``torch_neighbour_list`` with fixed shapes: bins and reach from the cell (on the host), a
  fixed number of slots per bin;
* either way the pairs within the cutoff are compacted by ``torch.nonzero_static`` into a
  fixed number of edge slots, the bucket's *capacity*: no host synchronisation, so search
  and model replay as one graph;
* padding as in ``geoff.cuda_graphs``: padding atoms (species 0, at the origin, a structure
  of their own) are kept out of the search, and each unused edge slot is a self-loop of a
  padding atom with a shift longer than the cutoff, whose message the envelope zeroes: no
  result changes;
* the edge count, the shortest edge and the fullest bin (``[count, d^2, i, j, fullest]``)
  come back with the results in the calculator's one transfer (``check``): more edges than
  the capacity, or a fuller bin than its slots, makes the bucket grow and the call run
  again; a shortest edge under the overlap threshold raises the calculator's
  ``OverlapError`` naming the atoms.

Above ``max_atoms`` (to ``search_max_atoms``) the model's activations would cost more pool
memory than its launches cost time, so the search is captured alone: after its replay the
summary is read (the GPU has run only the search: a short wait), overflows and overlaps are
handled there, and the calculator's usual model call runs on the exact Graph (the real
atoms and edges, no padding).

A shape (the bucket without its capacities) is captured on its ``capture_after``-th call
(``"auto"``: the second), so that sizes met once take the usual path and are never captured.

A bucket is (atoms rounded up on the grid of ``geoff.cuda_graphs``, the search and its bin
layout, forces, stress, model in the graph or not, capacities); its capacities are the first structure's edge count and
fullest bin (read once, when the bucket is made) times ``HEADROOM``, rounded up on the same
grid. Slabs and wires, non-finite positions, models that cannot be captured, sizes the
model would run in edge chunks and failed captures take the calculator's usual path, whose
checks and errors stay as they are.
"""
from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .cuda_graphs import (ATOM_FLOOR, AUTO_CAPTURE_AFTER, DEFAULT_MAX_BUCKETS, EDGE_FLOOR,
                          PER_STRUCTURE, CapturePool, Sightings, bucket_size, padding_atoms,
                          padding_shift, takes_chunked_path)
from .graph import (BATCH, CELL, EDGE_INDEX, MAX_NEIGHBOURS_PER_ATOM, PBC, POSITIONS, SHIFTS,
                    SPECIES, _Symbols, atoms_species)
from .neighbours import (ALL_PAIRS_MAX_ATOMS, _bin_count, _bin_table, _binned, _candidates,
                         _heights, _pair_mask, _rows_times, _stencil, all_pairs_apply,
                         cell_list_layout, too_many_neighbours)
from .structure_checks import check_edge_lengths
from .to_device import to_device

# Up to this many atoms "auto" captures the search with the model, True up to MAX_ATOMS. One
# H200, new-structure calls and MD steps (speed.md, "Fifteenth session"): the whole call
# captured beat the search captured alone at 2,048 and 2,916 atoms for SchNet (4.5 against
# 6.7 ms at 2,048), PaiNN and MACE-style alike, and True measured 1.0-1.2x faster than the
# usual path at 4,000-8,788 ("Fourteenth session"); but a captured graph keeps the model's
# activations in the pool (PaiNN at 32k: tens of GB), and beyond ~10k atoms the search is a
# small part of the call.
DEFAULT_MAX_ATOMS = 3_000
MAX_ATOMS = 10_000
# Above those sizes (to this many atoms) the search alone is captured: the eager search is
# ~25 launches and two host synchronisations (2-3 ms on an H200 at any size to 32k atoms),
# up to a third of an eager SchNet call at 4k-8k atoms, while the captured search keeps
# only its candidate arrays (~0.1 KB per candidate pair) in the pool. Its summary is read
# after the replay and the model runs eagerly on the exact Graph.
SEARCH_MAX_ATOMS = 50_000
# Periodic cells two cutoffs high: all pairs (N^2 work, no bins) up to this many atoms, the
# cell list above. Captured, the cell list's smaller GPU work wins where the eager search's
# host synchronisations made all pairs win (to 2,048): one H200, two rounds, SchNet and
# PaiNN equal at 864 atoms, cells 3-18 % faster at 1,372 and 2,048 (new structures and MD
# steps; speed.md, "Fourteenth session"). Molecules take all pairs up to 2,048.
PAIRS_MAX_ATOMS = 1_024
HEADROOM = 1.05  # edge slots beyond the first structure's count (thermal density changes)
SUMMARY = "search_summary"  # the output key of [edge count, d^2, i, j, fullest bin]


def available(device="cpu") -> bool:
    """Whether this torch has ``torch.nonzero_static`` on ``device``'s type (a sync-free
    compaction; CUDA support came after the CPU's): tried once per device type."""
    kind = torch.device(device).type
    if kind not in _AVAILABLE:
        try:
            torch.nonzero_static(torch.ones(2, dtype=torch.bool, device=device), size=1)
            _AVAILABLE[kind] = True
        except Exception:  # no such function, no kernel, or no such device in this build
            _AVAILABLE[kind] = False
    return _AVAILABLE[kind]


_AVAILABLE: Dict[str, bool] = {}


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


class _AllPairs:
    """Every pair of the slots (``geoff.neighbours`` all pairs): a molecule, or a periodic
    cell two cutoffs high.

    ``candidates(inputs)`` -> (keep (C,), r^2 (C,), fullest bin (0-d; 0 here)); then
    ``edges(inputs, rows)`` -> (i, j, float64 shifts Å) of candidate rows."""

    def __init__(self, periodic: bool, cutoff: float):
        self.periodic, self.cutoff = periodic, cutoff
        self._near: Optional[Tensor] = None

    def candidates(self, inputs: _Inputs) -> Tuple[Tensor, Tensor, Tensor]:
        keep, r2, near = _pair_mask(inputs.x[None], inputs.mats if self.periodic else None,
                                    self.cutoff)
        self._near = near[0] if near is not None else None
        keep = keep[0] & inputs.real[:, None] & inputs.real[None, :]  # padding meets nobody
        return keep.view(-1), r2.view(-1), inputs.n.new_zeros(())

    def fullest(self, inputs: _Inputs) -> int:
        return 0

    def edges(self, inputs: _Inputs, rows: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return pair_edges(rows, inputs.x.shape[0], self._near, inputs.mats)


def pair_edges(rows: Tensor, n: int, near: Optional[Tensor], mats: Optional[Tensor]
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """(i, j, float64 shifts Å) of flat indices ``rows`` into an (R, N, N) pair mask of
    ``geoff.neighbours._pair_mask`` (``near``: its rounded fractional differences, None
    without a cell; ``mats``: the cell and its inverse): atoms numbered replica by replica."""
    replica = torch.div(rows, n * n, rounding_mode="floor")
    rest = rows - replica * n * n
    i = torch.div(rest, n, rounding_mode="floor")
    first = replica * n
    if near is None:
        shifts = torch.zeros(len(rows), 3, dtype=torch.float64, device=rows.device)
    else:
        shifts = _rows_times(near.reshape(-1, 3)[rows].neg(), mats[0])
    return first + i, first + rest - i * n, shifts


def padded_edges(i: Tensor, j: Tensor, shifts: Tensor, count: Tensor, slots: Tensor, n_real,
                 n_atoms: int, pad_shift: Tensor) -> Tuple[Tensor, Tensor]:
    """(edge_index (2, S), shifts (S, 3)) of ``S`` edge slots whose first ``count`` hold the
    edges ``i, j, shifts``; the others become self-loops of the padding atoms ``n_real`` ..
    ``n_atoms - 1`` with ``pad_shift`` (longer than the cutoff: their messages are zero)."""
    valid = slots < count
    pad = padding_atoms(n_real, n_atoms, slots)
    edge_index = torch.stack([torch.where(valid, i, pad), torch.where(valid, j, pad)])
    return edge_index, torch.where(valid[:, None], shifts, pad_shift)


class _CellList:
    """The cell list of ``geoff.neighbours.torch_neighbour_list`` for a fully periodic cell,
    with fixed shapes: ``n_bins`` and ``reach`` (from the cell, on the host) and ``slots``
    atoms per bin (the bucket's; a fuller bin is reported through ``candidates``' third
    value, and its extra atoms are left out, so the call is then redone in a larger bucket).
    Padding atoms sit in the spare bin, which no atom visits."""

    def __init__(self, layout: tuple, slots: int, n_slots: int, cutoff: float, device):
        n_bins, reach = np.asarray(layout[0]), np.asarray(layout[1])
        self.slots, self.cutoff = int(slots), cutoff
        self.n_total = int(n_bins.prod())
        strides, offsets, self.centre = _stencil(n_bins, reach)
        self.offsets = torch.as_tensor(offsets, device=device)
        self.nb = torch.as_tensor(n_bins, device=device)
        self.strides = torch.as_tensor(strides, device=device)
        self._cand = self._image = self._wrap = None

    def _bins(self, inputs: _Inputs):
        wrap, wrapped, atom_bin, flat = _binned(inputs.x, inputs.mats[0], inputs.mats[1],
                                                self.nb, self.strides, PERIODIC)
        flat = torch.where(inputs.real, flat, self.n_total)
        return wrap, wrapped, atom_bin, flat, _bin_count(flat, self.n_total)

    def fullest(self, inputs: _Inputs) -> int:
        """The fullest bin's atoms (one read, when a bucket is sized)."""
        return int(self._bins(inputs)[-1][:self.n_total].max())

    def candidates(self, inputs: _Inputs) -> Tuple[Tensor, Tensor, Tensor]:
        n = inputs.x.shape[0]
        wrap, wrapped, atom_bin, flat, count = self._bins(inputs)
        table = _bin_table(flat, count, self.slots, n)
        far = torch.cat([wrapped, wrapped.new_full((1, 3), math.inf)])
        cand, image, d2, keep = _candidates(0, n, atom_bin, self.offsets, self.nb, PERIODIC,
                                            self.strides, table, far, inputs.mats[0],
                                            self.cutoff, self.centre, self.n_total)
        keep &= inputs.real[:, None, None]
        # for edges(): the wrap of the sentinel is a spare zero row
        self._cand, self._image = cand, image
        self._wrap = torch.cat([wrap.long(), wrap.new_zeros(1, 3, dtype=torch.long)])
        return keep.view(-1), d2.view(-1), count[:self.n_total].max()

    def edges(self, inputs: _Inputs, rows: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        k, m = self._cand.shape[1], self.slots
        i = torch.div(rows, k * m, rounding_mode="floor")
        j = self._cand.view(-1)[rows]
        # back from the wrapped frame to the caller's positions: x = wrapped + wrap @ cell
        images = self._image.view(-1, 3)[torch.div(rows, m, rounding_mode="floor")] \
            + self._wrap[i] - self._wrap[j]
        return i, j, _rows_times(images.double(), inputs.mats[0])


PERIODIC = np.ones(3, dtype=bool)


class _Bucket:
    """One bucket's inputs, search, capacity and captured graph: search + model, or (with
    ``search_only``) the search alone."""

    def __init__(self, model, inputs: _Inputs, search, capacity: int, cutoff: float,
                 dtype: torch.dtype, compute_forces: bool, compute_stress: bool,
                 search_only: bool = False):
        self.model, self.inputs, self.search = model, inputs, search
        self.search_only = search_only
        self.capacity, self.cutoff, self.dtype = capacity, cutoff, dtype
        self.flags = (compute_forces, compute_stress)
        device = inputs.x.device
        self._slots = torch.arange(capacity, device=device)
        self._pad_shift = padding_shift(cutoff, torch.float64, device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.outputs: Dict[str, Tensor] = {}

    def padded_graph(self) -> Tuple[Dict[str, Tensor], Tensor]:
        """The search on the inputs: (padded Graph, summary [count, d^2, i, j, fullest])."""
        b, n_slots = self.inputs, self.inputs.x.shape[0]
        keep, d2, fullest = self.search.candidates(b)
        count = keep.sum()
        rows = torch.nonzero_static(keep, size=self.capacity, fill_value=0).squeeze(1)
        edge_index, shifts = padded_edges(*self.search.edges(b, rows), count, self._slots,
                                          b.n, n_slots, self._pad_shift)
        d2 = torch.where(keep, d2, torch.full_like(d2, math.inf))
        k = torch.argmin(d2).view(1)  # (1,): a 0-d index would be read on the host
        a, c, _ = self.search.edges(b, k)
        summary = torch.cat([count.double().view(1), d2.index_select(0, k), a.double(),
                             c.double(), fullest.double().view(1)])
        graph = {POSITIONS: b.x.to(self.dtype), SPECIES: b.species, BATCH: b.batch,
                 EDGE_INDEX: edge_index, SHIFTS: shifts.to(self.dtype), CELL: b.cell,
                 PBC: b.pbc}
        return graph, summary

    def _call(self) -> Dict[str, Tensor]:
        """What the graph holds: the model's outputs and the summary (or, search only, the
        padded Graph's tensors and the summary)."""
        graph, summary = self.padded_graph()
        if self.search_only:
            return {**graph, SUMMARY: summary}
        forces, stress = self.flags
        out = dict(self.model(graph, compute_forces=forces, compute_stress=stress))
        out[SUMMARY] = summary
        return out

    def run(self, atoms, species: np.ndarray) -> Dict[str, Tensor]:
        """The outputs for the real atoms and structure (search only: the padded Graph)."""
        n = self.inputs.fill(atoms, species)
        if self.graph is None:  # pad_only
            self.outputs = self._call()
        else:
            self.graph.replay()
        if self.search_only:
            return self.outputs
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
        max_atoms: larger structures are not captured with the model (None: no limit).
        search_max_atoms: structures above ``max_atoms`` and up to this size have their
            search captured alone, and ``eager`` runs the model on its padded Graph; None:
            ``max_atoms`` (larger structures are not taken).
        eager: ``eager(graph, compute_forces=, compute_stress=) -> outputs``, the
            calculator's usual model call (edge chunks and all), for those sizes.
        capture_after: a shape (bucket size, search layout, outputs asked) is captured on
            its ``capture_after``-th call; the calls before take the usual path.
        plan: the calculator's ``AutoChunk.chunk_for`` (``edge_chunk="auto"``), asked once
            per bucket whether its graph fits whole (then it is captured unchunked); None:
            the model's own ``edge_chunk`` decides.
        captures: the memory pool to capture into (the calculator's ``GraphedModel``'s,
            so that the two share their intermediates' memory); None: its own.
        pad_only: fill the buckets and run search and model on them eagerly, no capture
            (works on the CPU: how the tests check this path).

    ``takes(atoms)`` says (on the host, in microseconds) whether a structure goes this way;
    the outputs are the model's for the real atoms and structure plus ``SUMMARY``, valid
    until the next call; ``check(summary, atoms)`` after reading them back returns False
    when the structure had more edges (or a fuller bin) than its bucket holds (its results
    are void; the bucket has grown, call again) and raises on an overlap. ``stats`` counts
    calls (replays, or eager runs with ``pad_only``), captures, regrown buckets and failed
    captures.
    """

    def __init__(self, model, min_distance: float, dtype: torch.dtype, device,
                 max_atoms: Optional[int] = DEFAULT_MAX_ATOMS, plan=None,
                 captures: Optional[CapturePool] = None, pad_only: bool = False,
                 search_max_atoms: Optional[int] = None, eager=None, capture_after: int = 1):
        self.model, self.dtype, self.device = model, dtype, torch.device(device)
        self.pad_only, self.plan = pad_only, plan
        self.cutoff = float(model.cutoff)
        self.min_distance = float(min_distance)
        if search_max_atoms is not None and max_atoms is not None \
                and search_max_atoms > max_atoms and eager is None:
            raise ValueError("search_max_atoms above max_atoms needs eager (the model call)")
        self.max_atoms = max_atoms
        self.search_max_atoms = max_atoms if search_max_atoms is None or max_atoms is None \
            else max(search_max_atoms, max_atoms)
        self.eager = eager
        self.sightings = Sightings(capture_after)  # calls of shapes not yet sized
        self.species = list(model.species)
        self.buckets: "OrderedDict[tuple, _Bucket]" = OrderedDict()
        # per shape (a bucket's key without its capacities): [edge slots, bin slots]
        self.capacity: Dict[tuple, List[int]] = {}
        self.failed: Dict[tuple, str] = {}
        self.stats = {"calls": 0, "captures": 0, "regrown": 0, "failed": 0}
        self._searches: Dict[tuple, Optional[tuple]] = {}
        self.captures = captures or CapturePool()
        self._last: Optional[tuple] = None  # the shape of the last call

    def search_of(self, atoms) -> Optional[tuple]:
        """``("pairs", periodic)`` (all pairs), ``("cells", n_bins, reach)`` (a cell list of
        a fully periodic cell) or None (not taken: the usual path, with its checks)."""
        n = len(atoms)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool).reshape(3)
        key = (cell.tobytes(), pbc.tobytes(), n)
        if key not in self._searches:
            if len(self._searches) > 64:
                self._searches.clear()
            self._searches[key] = _search_for(cell, pbc, n, self.cutoff)
        return self._searches[key]

    @property
    def capture_after(self) -> int:
        return self.sightings.after

    def _search_taken(self, atoms) -> Optional[tuple]:
        """``search_of(atoms)`` when ``atoms`` goes through the captured search, else None
        (the calculator's path, with its checks and errors)."""
        n = len(atoms)
        if n == 0 or (self.search_max_atoms is not None and n > self.search_max_atoms) \
                or self.min_distance > self.cutoff:
            return None
        search = self.search_of(atoms)
        if search is None or not np.isfinite(atoms.positions).all():
            return None  # non-finite positions: the usual path's error
        return search

    def takes(self, atoms) -> bool:
        """Whether ``atoms`` goes through the captured search (else the calculator's path)."""
        return self._search_taken(atoms) is not None

    def __call__(self, atoms, compute_forces: bool = True, compute_stress: bool = False
                 ) -> Optional[Dict[str, Tensor]]:
        """The outputs, or None when ``atoms`` is not taken (``takes``) or its bucket cannot
        be captured (the caller runs its usual path; a warning said why, once)."""
        search = self._search_taken(atoms)
        if search is None:
            return None
        species = atoms_species(atoms, self.species)
        n = len(atoms)
        # a bucket's key without its capacities; the last item: the model in the graph
        shape = (bucket_size(n + 1, ATOM_FLOOR), search, bool(compute_forces),
                 bool(compute_stress), self.max_atoms is None or n <= self.max_atoms)
        if shape in self.failed:
            return None
        if shape not in self.capacity:
            if not self.sightings.due(shape):
                return None  # the usual path, until the shape comes again
            if not self._sized(atoms, species, shape):
                return None
        key = shape + tuple(self.capacity[shape])
        bucket = self.buckets.get(key) or self._new_bucket(key, atoms, species)
        if bucket is None:
            return None
        self.buckets.move_to_end(key)
        self.stats["calls"] += 1
        self._last = shape
        out = bucket.run(atoms, species)
        if not bucket.search_only:
            return out
        # The search alone: its summary is read now (the GPU has run only the search, so
        # this wait costs little) and the model runs on the exact Graph, without the
        # padding's atoms and spare edge slots (up to a fifth more edges: PaiNN at 4,000
        # atoms lost more to them than the search gained, speed.md "Fifteenth session")
        summary = out[SUMMARY].cpu().numpy()
        if not self.check(summary, atoms):
            return self(atoms, compute_forces, compute_stress)  # in the regrown bucket
        graph = _exact(out, len(atoms), int(summary[0]))
        return self.eager(graph, compute_forces=compute_forces, compute_stress=compute_stress)

    def _searcher(self, shape: tuple, bin_slots: int):
        search = shape[1]
        if search[0] == "pairs":
            return _AllPairs(search[1], self.cutoff)
        return _CellList(search[1:], bin_slots, shape[0], self.cutoff, self.device)

    def _sized(self, atoms, species: np.ndarray, shape: tuple) -> bool:
        """The first capacities of ``shape``'s buckets from this structure (one read)."""
        inputs = _Inputs(shape[0], self.dtype, self.device)
        inputs.fill(atoms, species)
        bin_slots = self._searcher(shape, 1).fullest(inputs)  # 0 for all pairs
        count = int(self._searcher(shape, bin_slots).candidates(inputs)[0].sum())
        if count > MAX_NEIGHBOURS_PER_ATOM * len(atoms):
            self.failed[shape] = "more neighbours than MAX_NEIGHBOURS_PER_ATOM"
            return False  # a unit mistake: the usual path says so
        self.capacity[shape] = [_grown(count, EDGE_FLOOR), _grown(bin_slots, 1)
                                if bin_slots else 0]
        return True

    def _new_bucket(self, key: tuple, atoms, species: np.ndarray) -> Optional[_Bucket]:
        shape, (capacity, bin_slots) = key[:5], key[5:]
        n_atoms, _, forces, stress, whole = shape
        if not available(self.device):
            self.failed[shape] = "this torch has no torch.nonzero_static on this device"
            return None
        while len(self.buckets) >= DEFAULT_MAX_BUCKETS:
            self.buckets.popitem(last=False)
        inputs = _Inputs(n_atoms, self.dtype, self.device)
        inputs.fill(atoms, species)  # warm-up and capture on real numbers
        bucket = _Bucket(self.model, inputs, self._searcher(shape, bin_slots), capacity,
                         self.cutoff, self.dtype, forces, stress, search_only=not whole)
        chunk = None
        if whole:  # the model in the graph: unchunked, or not at all
            chunk = chunk_plan(self, shape, bucket, n_atoms, capacity)
            if chunk is False:
                return None
        if not capture_bucket(self, shape, bucket, chunk,
                              f"of the neighbour search and model for {n_atoms} atoms",
                              "this size builds its neighbour list outside the graph"):
            return None
        self.buckets[key] = bucket
        return bucket

    def check(self, summary: np.ndarray, atoms) -> bool:
        """After the results came back: False when the structure had more edges or a fuller
        bin than its bucket holds (the results are void; the next call uses a larger
        bucket); raises ``OverlapError`` naming the closest atoms under the threshold."""
        count, d2, a, b, fullest = (float(v) for v in np.asarray(summary).reshape(5))
        capacity = self.capacity[self._last]
        if count > capacity[0] or fullest > capacity[1]:
            capacity[0] = max(capacity[0], _grown(int(count), EDGE_FLOOR))
            if capacity[1]:
                capacity[1] = max(capacity[1], _grown(int(fullest), 1))
            self.stats["regrown"] += 1
            return False
        if self.min_distance > 0 and math.isfinite(d2):
            check_edge_lengths(None, None, None, None, self.min_distance,
                               _Symbols(atoms.numbers),
                               shortest=(math.sqrt(d2), int(a), int(b)))
        return True


def _exact(padded: Dict[str, Tensor], n_atoms: int, n_edges: int) -> Dict[str, Tensor]:
    """The Graph of the real atoms and edges of a padded search's outputs (views)."""
    return {POSITIONS: padded[POSITIONS][:n_atoms], SPECIES: padded[SPECIES][:n_atoms],
            BATCH: padded[BATCH][:n_atoms],
            EDGE_INDEX: padded[EDGE_INDEX][:, :n_edges].contiguous(),
            SHIFTS: padded[SHIFTS][:n_edges], CELL: padded[CELL][:1], PBC: padded[PBC][:1]}


def chunk_plan(owner, shape: tuple, bucket, n_atoms: int, capacity: int):
    """For a bucket whose graph holds the model: ``owner.plan``'s edge chunk for its padded
    graph (0: whole; None: the model's own ``edge_chunk``), or False when the model would run
    it in chunks (not capturable; ``owner.failed[shape]`` says so)."""
    chunk = owner.plan(bucket.padded_graph()[0]) if owner.plan is not None else None
    if chunk or (chunk is None and takes_chunked_path(owner.model, n_atoms, capacity)):
        owner.failed[shape] = "the model runs this size in edge chunks (edge_chunk)"
        return False
    return chunk


def capture_bucket(owner, shape: tuple, bucket, chunk, what: str, fallback: str) -> bool:
    """Capture ``bucket._call`` into ``owner.captures`` (with ``owner.pad_only`` nothing is
    captured); False after a failure, which never raises: ``owner.failed[shape]`` keeps it
    (that shape takes the usual path from now on) and one warning says ``what`` failed and
    the ``fallback``."""
    if owner.pad_only:
        return True
    try:
        with _unchunked(owner.model, chunk == 0):
            bucket.graph, bucket.outputs = owner.captures.capture(bucket._call, owner.device)
    except Exception as exc:
        owner.failed[shape] = f"{type(exc).__name__}: {exc}"
        owner.stats["failed"] += 1
        warnings.warn(f"CUDA graph capture {what} failed ({owner.failed[shape]}); {fallback}",
                      RuntimeWarning, stacklevel=4)
        return False
    owner.stats["captures"] += 1
    return True


def _grown(count: int, floor: int) -> int:
    """Slots for ``count`` items: ``HEADROOM`` more, rounded up on the bucket grid."""
    return bucket_size(max(int(math.ceil(count * HEADROOM)), 1), floor)


def _search_for(cell: np.ndarray, pbc: np.ndarray, n: int, cutoff: float) -> Optional[tuple]:
    """``CapturedCall.search_of`` for a cell, pbc and atom count."""
    if not np.isfinite(cell).all():
        return None
    if (n <= PAIRS_MAX_ATOMS or not pbc.any()) and n <= ALL_PAIRS_MAX_ATOMS["cuda"] \
            and all_pairs_apply(cell, pbc, cutoff):
        return ("pairs", bool(pbc.all()))
    if not pbc.all():
        return None  # slabs and wires: the usual path (the bounding box sets their bins)
    volume = abs(np.linalg.det(cell))
    if not volume > 0 or too_many_neighbours(n, volume, cutoff):
        return None  # degenerate, or a unit mistake: the usual path's error
    n_bins, reach = cell_list_layout(_heights(cell, volume), pbc, n, cutoff)
    return ("cells", tuple(int(v) for v in n_bins), tuple(int(v) for v in reach))


class _unchunked:
    """Within: the model's chunking modules at ``edge_chunk = 0`` (when ``on``)."""

    def __init__(self, model, on: bool):
        from .potentials.autochunk import chunking_modules

        self.modules = chunking_modules(model) if on else []
        self.saved = [m.edge_chunk for m in self.modules]

    def __enter__(self):
        for m in self.modules:
            m.edge_chunk = 0

    def __exit__(self, *exc):
        for m, c in zip(self.modules, self.saved):
            m.edge_chunk = c


def captured_call(model, cuda_graphs, device, dtype: torch.dtype,
                  min_distance: Optional[float] = None, plan=None,
                  captures: Optional[CapturePool] = None, eager=None,
                  auto_max_atoms: Optional[int] = None) -> Optional[CapturedCall]:
    """The ``CapturedCall`` of ``GeoffCalculator(cuda_graphs=...)``, or None: ``"auto"``
    captures search and model up to ``DEFAULT_MAX_ATOMS`` atoms, from a shape's second call
    (``AUTO_CAPTURE_AFTER``), ``True`` up to ``MAX_ATOMS`` from the first; above those sizes,
    with ``eager`` given, the search alone up to ``SEARCH_MAX_ATOMS``. ``False``, the CPU,
    models that cannot be captured (``geoff.cuda_graphs.refusal``) and a torch without
    ``nonzero_static`` take none. ``min_distance`` None: the model's overlap threshold;
    ``plan``, ``captures``, ``eager``: see ``CapturedCall``; ``auto_max_atoms``: the
    representation's ``CAPTURE_MAX_ATOMS`` (None: ``DEFAULT_MAX_ATOMS``)."""
    from .cuda_graphs import refusal
    from .structure_checks import overlap_threshold

    if cuda_graphs is False or torch.device(device).type != "cuda" \
            or refusal(model) is not None or not available(device):
        return None
    if min_distance is None:
        min_distance = overlap_threshold(model)
    auto = cuda_graphs == "auto"
    return CapturedCall(model, min_distance, dtype, device,
                        max_atoms=(auto_max_atoms or DEFAULT_MAX_ATOMS) if auto else MAX_ATOMS,
                        plan=plan,
                        captures=captures, eager=eager,
                        search_max_atoms=SEARCH_MAX_ATOMS if eager is not None else None,
                        capture_after=AUTO_CAPTURE_AFTER if auto else 1)

"""``BatchedForces``' neighbour search and model in one CUDA graph.

Batched replicas are small systems (a molecule, or a cell two cutoffs high) called every
step, where a GPU is launch-bound: ``BatchedForces`` builds its edges with
``geoff.neighbours.AllPairs`` (R N^2 pairs, one host synchronisation for the ``nonzero``)
and then runs the model. ``CapturedReplicas`` does both inside one graph per replica count,
as ``geoff.captured_call`` does for one structure:

* every pair of each replica is examined as ``AllPairs`` does (float64, minimum image), and
  the pairs within the cutoff are compacted by ``torch.nonzero_static`` into a fixed number
  of edge slots (the first batch's count + 5 %, on the bucket grid);
* after the R N real atoms come ``PADDING_ATOMS`` padding atoms (species 0, a structure of
  their own, zero cell); each unused edge slot is a self-loop of one of them with a shift
  longer than the cutoff, whose message the envelope zeroes: no result changes;
* the edge count comes back with the results (``SUMMARY``): a batch with more edges than
  the slots is void, its bucket grows, and the caller computes it again (``check``).

Overlaps are not checked here, as ``BatchedForces`` does not check them (the failure
monitor watches the replicas' distances). Non-finite replicas never reach it (the caller
drops them); a replica count whose model would run in edge chunks, and a failed capture,
take the usual path.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..captured_call import (SUMMARY, _grown, available, capture_bucket, chunk_plan,
                             padded_edges, pair_edges)
from ..cuda_graphs import (AUTO_CAPTURE_AFTER, EDGE_FLOOR, PER_STRUCTURE, CapturePool,
                           Sightings, padding_shift)
from ..graph import BATCH, CELL, EDGE_INDEX, PBC, POSITIONS, SHIFTS, SPECIES
from ..neighbours import _cell_and_inverse, _pair_mask
from ..to_device import to_device

PADDING_ATOMS = 8  # spread the padding edges' sums over a few atoms (fewer atomic collisions)
# "auto" takes batches of up to this many atoms (all replicas), True up to MAX_ATOMS: the
# limits of the single-structure capture (geoff.captured_call)
DEFAULT_MAX_ATOMS = 3_000
MAX_ATOMS = 10_000


class _Bucket:
    """The static inputs, capacity and captured graph of one replica count."""

    def __init__(self, owner: "CapturedReplicas", replicas: int, capacity: int,
                 compute_forces: bool):
        n, device = owner.n_atoms, owner.device
        self.owner, self.replicas, self.capacity = owner, replicas, capacity
        self.forces = compute_forces
        total = replicas * n + PADDING_ATOMS
        self.x = torch.zeros(total, 3, dtype=torch.float64, device=device)
        self.species = torch.cat([owner.species.repeat(replicas),
                                  owner.species.new_zeros(PADDING_ATOMS)])
        self.batch = torch.arange(replicas + 1, device=device).repeat_interleave(
            torch.tensor([n] * replicas + [PADDING_ATOMS], device=device))
        cell = torch.as_tensor(owner.cell, dtype=owner.dtype, device=device)
        self.cell = torch.cat([cell.expand(replicas, 3, 3), cell.new_zeros(1, 3, 3)])
        pbc = torch.as_tensor(owner.pbc, device=device)
        self.pbc = torch.cat([pbc.expand(replicas, 3), pbc.new_zeros(1, 3)])
        self._slots = torch.arange(capacity, device=device)
        self._pad_shift = padding_shift(owner.cutoff, torch.float64, device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.outputs: Dict[str, Tensor] = {}

    def padded_graph(self) -> Tuple[Dict[str, Tensor], Tensor]:
        """The search on the inputs: (padded Graph, edge count (1,) float64)."""
        owner, k, n = self.owner, self.replicas, self.owner.n_atoms
        real = k * n
        keep, _, near = _pair_mask(self.x[:real].view(k, n, 3), owner.mats, owner.cutoff)
        count = keep.sum()
        rows = torch.nonzero_static(keep.view(-1), size=self.capacity,
                                    fill_value=0).squeeze(1)
        edge_index, shifts = padded_edges(*pair_edges(rows, n, near, owner.mats), count,
                                          self._slots, real, real + PADDING_ATOMS,
                                          self._pad_shift)
        graph = {POSITIONS: self.x.to(owner.dtype), SPECIES: self.species, BATCH: self.batch,
                 EDGE_INDEX: edge_index, SHIFTS: shifts.to(owner.dtype),
                 CELL: self.cell, PBC: self.pbc}
        return graph, count.double().view(1)

    def _call(self) -> Dict[str, Tensor]:
        graph, count = self.padded_graph()
        out = dict(self.owner.model(graph, compute_forces=self.forces))
        out[SUMMARY] = count
        return out

    def run(self, positions: np.ndarray) -> Dict[str, Tensor]:
        """Outputs for the real replicas and atoms (valid until the next call)."""
        real = self.replicas * self.owner.n_atoms
        self.x[:real].copy_(to_device(positions.reshape(real, 3), self.x.device,
                                      torch.float64))
        if self.graph is None:  # pad_only
            self.outputs = self._call()
        else:
            self.graph.replay()
        return {key: value if key == SUMMARY else value[:self.replicas]
                if key in PER_STRUCTURE else value[:real]
                for key, value in self.outputs.items()}


class CapturedReplicas:
    """``call(positions (k, N, 3) Å, compute_forces) -> outputs`` of k finite replicas of
    one molecule or cell two cutoffs high, through one CUDA graph per (k, forces) holding
    the all-pairs search and the model (module docstring); None when that shape takes the
    usual path.

    Args:
        model: ``BatchedForces``' frozen model (eval mode) on a CUDA device.
        species: (N,) species indices of one replica, on the model's device.
        cell, pbc: the replicas' cell (3, 3) Å and pbc (3,): no periodic direction, or
            three with every cell height at least two cutoffs (``all_pairs_apply``).
        dtype: the model's.
        max_atoms: larger batches (k N atoms) are not taken (None: no limit).
        capture_after: a shape is captured on its ``capture_after``-th call.
        plan: ``AutoChunk.chunk_for`` (``edge_chunk="auto"``), asked once per shape
            whether its graph fits unchunked; None: the model's own ``edge_chunk``.
        captures: the memory pool to capture into (shared with the caller's
            ``GraphedModel``); None: its own.
        pad_only: run search and model eagerly on the padded buckets, no capture (works on
            the CPU: how the tests check this path).

    After reading the outputs back, ``check(summary)`` returns False when the batch had
    more edges than its bucket holds (its results are void; the next call uses a larger
    bucket). ``stats`` counts calls, captures, regrown buckets and failed captures.
    """

    def __init__(self, model, species: Tensor, cell, pbc, dtype: torch.dtype, device,
                 max_atoms: Optional[int] = DEFAULT_MAX_ATOMS, capture_after: int = 1,
                 plan=None, captures: Optional[CapturePool] = None, pad_only: bool = False):
        self.model, self.dtype, self.device = model, dtype, torch.device(device)
        self.species = species
        self.n_atoms = int(species.shape[0])
        self.cutoff = float(model.cutoff)
        self.cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.asarray(pbc, dtype=bool).reshape(3)
        self.mats = _cell_and_inverse(self.cell, self.device) if self.pbc.all() else None
        self.max_atoms = max_atoms
        self.plan, self.pad_only = plan, pad_only
        self.captures = captures or CapturePool()
        self.capacity: Dict[tuple, int] = {}  # per (k, forces): edge slots
        self.buckets: Dict[tuple, _Bucket] = {}
        self.failed: Dict[tuple, str] = {}
        self.stats = {"calls": 0, "captures": 0, "regrown": 0, "failed": 0}
        self.sightings = Sightings(capture_after)
        self._last: Optional[tuple] = None

    def __call__(self, positions: np.ndarray, compute_forces: bool = True
                 ) -> Optional[Dict[str, Tensor]]:
        k = positions.shape[0]
        shape = (k, bool(compute_forces))
        if shape in self.failed or (self.max_atoms is not None
                                    and k * self.n_atoms > self.max_atoms):
            return None
        if shape not in self.capacity:
            if not self.sightings.due(shape):
                return None  # the usual path, until the shape comes again
            self.capacity[shape] = self._first_capacity(positions)
        key = shape + (self.capacity[shape],)
        bucket = self.buckets.get(key) or self._new_bucket(key, positions)
        if bucket is None:
            return None
        self.stats["calls"] += 1
        self._last = shape
        return bucket.run(positions)

    def _first_capacity(self, positions: np.ndarray) -> int:
        """Edge slots for a shape, from its first batch (one read)."""
        x = to_device(positions, self.device, torch.float64)
        keep, _, _ = _pair_mask(x, self.mats, self.cutoff)
        return _grown(int(keep.sum()), EDGE_FLOOR)

    def _new_bucket(self, key: tuple, positions: np.ndarray) -> Optional[_Bucket]:
        k, forces, capacity = key
        shape = key[:2]
        if not available(self.device):
            self.failed[shape] = "this torch has no torch.nonzero_static on this device"
            return None
        for old in [b for b in self.buckets if b[:2] == shape]:
            del self.buckets[old]  # outgrown: its memory returns to the pool
        bucket = _Bucket(self, k, capacity, forces)
        bucket.x[:k * self.n_atoms].copy_(to_device(positions.reshape(-1, 3), self.device,
                                                    torch.float64))
        n_atoms = k * self.n_atoms + PADDING_ATOMS
        chunk = chunk_plan(self, shape, bucket, n_atoms, capacity)
        if chunk is False or not capture_bucket(
                self, shape, bucket, chunk, f"of {k} replicas' neighbour search and model",
                "they build their edges outside the graph"):
            return None
        self.buckets[key] = bucket
        return bucket

    def check(self, summary: np.ndarray) -> bool:
        """False when the last batch had more edges than its bucket holds (void results;
        the next call uses a larger bucket)."""
        count = float(np.asarray(summary).reshape(-1)[0])
        if count > self.capacity[self._last]:
            self.capacity[self._last] = _grown(int(math.ceil(count)), EDGE_FLOOR)
            self.stats["regrown"] += 1
            return False
        return True


def captured_replicas(model, species: Tensor, cell, pbc, cuda_graphs, dtype: torch.dtype,
                      device, plan=None, captures: Optional[CapturePool] = None
                      ) -> Optional[CapturedReplicas]:
    """The ``CapturedReplicas`` of ``BatchedForces(cuda_graphs=...)``, or None: ``"auto"``
    takes batches up to ``DEFAULT_MAX_ATOMS`` atoms from a shape's second call, ``True`` up
    to ``MAX_ATOMS`` from the first; ``False``, the CPU, models that cannot be captured and
    a torch without ``nonzero_static`` take none (the caller checks that all pairs apply)."""
    from ..cuda_graphs import refusal

    if cuda_graphs is False or torch.device(device).type != "cuda" \
            or refusal(model) is not None or not available(device):
        return None
    auto = cuda_graphs == "auto"
    return CapturedReplicas(model, species, cell, pbc, dtype, device,
                            max_atoms=DEFAULT_MAX_ATOMS if auto else MAX_ATOMS,
                            capture_after=AUTO_CAPTURE_AFTER if auto else 1, plan=plan,
                            captures=captures)

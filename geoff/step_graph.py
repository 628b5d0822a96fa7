"""The Graph of consecutive MD steps kept on the device (``GeoffCalculator(skin_edges="keep")``).

Between two MD steps only the positions change. The species, cell and batch stay, and so do
the edges when the Verlet list goes to the model whole (``NeighbourCache(filter_edges=False)``:
the edges beyond the cutoff contribute exactly nothing, ``tests/test_skin_edges.py``). A
``StepGraph`` keeps the last Graph, and while the list holds a step

* decides on the host whether it holds (``NeighbourCache.reuse_displacement``: the largest
  displacement since the build against skin / 2, in numpy), without waiting for the device;
* uploads the positions (one host-to-device copy) into a copy of the kept Graph: the other
  tensors are the same objects as before, which CUDA-graph buffers recognise and skip;
* checks overlaps only where one is possible. While every atom has moved at most m since
  the list's build, no two atoms are closer than the bound min(shortest edge at the build,
  cutoff) minus 2m (pairs beyond cutoff + skin at the build stay beyond the cutoff), so a
  step whose bound stays above the threshold (every healthy one) skips the check.
  Otherwise it measures the list's shortest edge on the device and hands it back unread
  (``pending``): the caller reads it with its results, in the one transfer it makes
  anyway, and ``check`` raises the overlap error then, naming the atoms.

So a step makes no host synchronisation of its own. Everything else (other species, cell,
pbc or atom count, a stale list, an overlap threshold beyond the cutoff) builds the Graph
through ``atoms_to_graph``, whose Graph this is either way.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .graph import POSITIONS, Graph, _Symbols
from .neighbours import NeighbourCache
from .structure_checks import check_edge_lengths
from .to_device import to_device


class StepGraph:
    """``step(atoms) -> (graph, pending)`` for a calculator with a ``NeighbourCache``: while
    the cache keeps its edges whole (``filter_edges=False``) the Graph is kept; while it
    filters, every call builds.

    Args:
        cache: the calculator's ``NeighbourCache``.
        build: ``atoms -> Graph`` through ``atoms_to_graph`` with that cache (the full path).
        cutoff: the model's cutoff, Å.
        min_distance: the overlap threshold, Å (0: no check); above ``cutoff`` every step
            takes the full path, whose check then searches beyond the graph's edges.
        dtype, device: the Graph's.

    ``pending`` is None or a float64 (3,) device tensor ``[d^2, i, j]`` of the shortest edge,
    for ``check`` once read back. ``reused`` counts the steps that kept the Graph,
    ``checked`` those of them whose overlap bound was too close to the threshold to skip.
    """

    def __init__(self, cache: NeighbourCache, build: Callable[[object], Graph], cutoff: float,
                 min_distance: float, dtype: torch.dtype, device: torch.device):
        self.cache, self.build = cache, build
        self.cutoff, self.min_distance = float(cutoff), float(min_distance)
        self.dtype, self.device = dtype, device
        self.reused = self.checked = 0
        self._graph: Optional[Graph] = None
        self._numbers: Optional[np.ndarray] = None
        self._builds = -1

    def __call__(self, atoms) -> Tuple[Graph, Optional[Tensor]]:
        if self.cache.filter_edges:  # a filtered list changes its edges every step
            self._graph = None
            return self.build(atoms), None
        check = 0.0 < self.min_distance <= self.cutoff
        moved = None
        if self._graph is not None and self.cache.builds == self._builds \
                and (check or self.min_distance <= 0) \
                and np.array_equal(atoms.numbers, self._numbers):
            moved = self.cache.reuse_displacement(atoms.positions, atoms.cell.array, atoms.pbc,
                                                  self.cutoff)
        if moved is not None:
            x = to_device(atoms.positions, self.device, torch.float64)
            graph = dict(self._graph)
            graph[POSITIONS] = x.to(self.dtype)
            self.reused += 1
            closest = min(self.cache.build_shortest, self.cutoff) - 2.0 * moved  # a bound, Å
            if check and closest < self.min_distance:
                self.checked += 1
                return graph, self.cache.shortest_pending(x)
            return graph, None
        graph = self.build(atoms)  # checks the overlaps itself
        self._graph, self._builds = graph, self.cache.builds
        self._numbers = np.array(atoms.numbers)
        return dict(graph), None  # a copy: the kept dict never leaves this object

    def check(self, pending: np.ndarray, atoms) -> None:
        """Raise ``OverlapError`` if the shortest edge read back (``[d^2, i, j]``) is shorter
        than the threshold."""
        d2, a, b = (float(v) for v in np.asarray(pending).reshape(3))
        shortest = (float(np.sqrt(d2)), int(a), int(b)) if a >= 0 else (np.inf, -1, -1)
        check_edge_lengths(None, None, None, None, self.min_distance, _Symbols(atoms.numbers),
                           shortest=shortest)

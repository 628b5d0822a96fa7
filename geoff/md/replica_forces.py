"""One force call for R replicas of one system: the R copies become one batched Graph
(``batch`` (R*N,), ``cell`` (R, 3, 3)) through the one ``EnergyModel``.

Edges are built on the model's device when that is exact and cheap: a molecule (no periodic
direction) or a fully periodic cell, triclinic too, at least two cutoffs high in every
direction, where the minimum image is the only image within the cutoff
(``geoff.neighbours.AllPairs``). All N(N-1) pairs of one replica are tested at once for all
replicas (R N^2 work, which is what a GPU wants for the small systems replicas are for).
Any other cell falls back to ``geoff.graph.neighbour_list`` (matscipy) per replica on the
CPU, the exact list of the single-replica calculator.

With ``cuda_graphs`` on CUDA, the all-pairs search and the model are captured as one graph
per replica count (``geoff.md.replica_capture``): a step then waits for the device once, for
its results.

Replicas whose positions are not finite are not sent to the model (one blown-up replica must
not poison the batch): their energies and forces come back NaN, which the failure monitor
reports as ``nan`` for that replica alone.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ..captured_call import SUMMARY
from ..cuda_graphs import graphed
from ..graph import add_edge_pairs, atoms_species, neighbour_list
from ..inference import force_key, frozen, torch_dtype, use_edge_pairs, use_radial_tables
from ..neighbours import AllPairs, all_pairs_apply
from ..potentials.autochunk import edge_chunking
from ..to_device import to_device, to_host
from .replica_capture import captured_replicas


class BatchedForces:
    """``model`` on R replicas of ``atoms`` (same species, cell and pbc; own positions).

    ``forces`` picks the head as in ``GeoffCalculator`` (``"conservative"`` or ``"direct"``).
    Call with positions (k, N, 3) Å (numpy) -> (energy (k,) eV, forces (k, N, 3) eV/Å);
    ``split`` and ``direct`` serve multiple time stepping on a ``force_head="both"`` model.
    ``cuda_graphs`` (``"auto"``, the default, ``True`` or ``False``): run the model through
    captured CUDA graphs, shapes padded to buckets (``geoff.cuda_graphs``), and where all
    pairs apply the search with it (``geoff.md.replica_capture``; ``"auto"`` from a replica count's second
    call, up to 3,000 atoms in all); eager on the CPU.
    ``radial_table``, ``edge_pairs`` and ``edge_chunk`` choose as in ``GeoffCalculator``
    (``"auto"``: where each was measured to pay; ``edge_chunk="auto"`` chunks a batch's edges
    only when the whole batch would not fit in memory), so that a batch runs the model a
    single run would.
    """

    def __init__(self, model, atoms, device="cpu", dtype="float64", forces="conservative",
                 cuda_graphs="auto", radial_table="auto", edge_pairs="auto", edge_chunk="auto"):
        self.device = torch.device(device)
        self.dtype = torch_dtype(dtype)
        self.key = force_key(model.force_head, forces)
        self.model = frozen(model, self.device, self.dtype)
        self.radial_table = use_radial_tables(self.model, radial_table, self.device, self.dtype)
        self.edge_pairs = use_edge_pairs(self.model, edge_pairs, self.device)
        self.run_model = graphed(self.model, cuda_graphs, self.device)  # or the model itself
        # "auto": the chunk chosen per call from the free memory, around run_model
        self.auto_chunk = edge_chunking(self.model, edge_chunk, self._run)
        self.backward = self.key == "forces" and model.force_head != "direct"
        self.force_head = model.force_head
        self.cutoff = float(model.cutoff)
        self.n_atoms = len(atoms)
        self.cell = np.asarray(atoms.cell.array, dtype=np.float64)
        self.pbc = np.asarray(atoms.pbc, dtype=bool)
        z = atoms_species(atoms, model.species)
        self.species = torch.as_tensor(z, device=self.device)
        # all pairs on the model's device where exact (the cell checked once, here)
        self.all_pairs = AllPairs(self.cell, self.pbc, self.cutoff, self.device) \
            if all_pairs_apply(self.cell, self.pbc, self.cutoff) else None
        self.on_device = self.all_pairs is not None
        self._constant_cache: dict = {}
        # the search captured with the model (CUDA, all pairs)
        self.captured = captured_replicas(
            self.model, self.species, self.cell, self.pbc, cuda_graphs, self.dtype,
            self.device, plan=self.auto_chunk.chunk_for if self.auto_chunk else None,
            captures=getattr(self.run_model, "captures", None)) if self.on_device else None

    def _run(self, graph, **kwargs):
        return self.run_model(graph, **kwargs)

    def _edges_on_device(self, pos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(edge_index (2, E), shifts (E, 3)) of positions (k, N, 3), all pairs at once."""
        i, j, shifts, _ = self.all_pairs(pos)
        return torch.stack([i, j]), shifts.to(self.dtype)

    def _edges_on_cpu(self, positions: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        edges, shifts = [], []
        for r, x in enumerate(positions):
            i, j, s = neighbour_list(x, self.cell, self.pbc, self.cutoff)
            edges.append(np.stack([i, j]) + r * self.n_atoms)
            shifts.append(s)
        return (torch.as_tensor(np.concatenate(edges, axis=1), device=self.device),
                torch.as_tensor(np.concatenate(shifts), dtype=self.dtype, device=self.device))

    def graph(self, positions: np.ndarray) -> dict:
        """The batched Graph of positions (k, N, 3)."""
        k, n = positions.shape[:2]
        exact = to_device(positions, self.device, torch.float64)  # the search's precision
        pos = exact.to(self.dtype)
        if self.on_device:
            edge_index, shifts = self._edges_on_device(exact)
        else:
            edge_index, shifts = self._edges_on_cpu(positions)
        graph = {"positions": pos.reshape(k * n, 3), "edge_index": edge_index, "shifts": shifts,
                 **self._constants(k)}
        return add_edge_pairs(graph) if self.edge_pairs else graph

    def _constants(self, k: int) -> dict:
        """species, cell, pbc and batch of k replicas: built once per k (each is a host copy
        or launch that a small, launch-bound step would pay again)."""
        if k not in self._constant_cache:
            n = self.n_atoms
            cell = torch.as_tensor(self.cell, dtype=self.dtype, device=self.device)
            self._constant_cache[k] = {
                "species": self.species.repeat(k),
                "cell": cell.unsqueeze(0).expand(k, 3, 3).contiguous(),
                "pbc": torch.as_tensor(self.pbc, device=self.device).unsqueeze(0).expand(k, 3),
                "batch": torch.arange(k, device=self.device).repeat_interleave(n)}
        return self._constant_cache[k]

    def _evaluate(self, positions, keys, backward: bool):
        """(energy (k,), *arrays (k, N, 3) of ``keys``) of positions (k, N, 3); NaN for the
        replicas whose positions are not finite."""
        positions = np.asarray(positions, dtype=np.float64)
        k, n = positions.shape[:2]
        energy = np.full(k, np.nan)
        arrays = [np.full((k, n, 3), np.nan) for _ in keys]
        ok = np.nonzero(np.isfinite(positions).reshape(k, -1).all(axis=1))[0]
        if len(ok):
            out = self.captured(positions[ok], backward) if self.captured else None
            if out is None:
                call = self.auto_chunk or self.run_model
                out = call(self.graph(positions[ok]), compute_forces=backward)
            wanted = {"energy": out["energy"], **{key: out[key] for key in keys}}
            if SUMMARY in out:  # the captured search's edge count, read with the results
                wanted[SUMMARY] = out[SUMMARY]
            host = to_host(wanted)
            if SUMMARY in host and not self.captured.check(host.pop(SUMMARY)):
                return self._evaluate(positions, keys, backward)  # more edges than slots
            energy[ok] = host["energy"]
            for key, array in zip(keys, arrays):
                array[ok] = host[key].reshape(len(ok), n, 3)
        return (energy, *arrays)

    def __call__(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return self._evaluate(positions, (self.key,), self.backward)

    # multiple time stepping (a force_head="both" model): one call gives both force sets
    def split(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(energy (k,), conservative forces, direct forces (k, N, 3)): forward + backward."""
        self._need_both()
        return self._evaluate(positions, ("forces", "direct_forces"), True)

    def direct(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(energy (k,), direct forces (k, N, 3)): the forward pass only."""
        self._need_both()
        return self._evaluate(positions, ("direct_forces",), False)

    def _need_both(self) -> None:
        if self.force_head != "both":
            raise ValueError("multiple time stepping needs a model with force_head='both' "
                             f"(one representation, both heads); this one is "
                             f"{self.force_head!r}")

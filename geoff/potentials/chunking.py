"""Edge chunking with recomputation: message sums whose per-edge activations are not kept.

A message-passing layer computes per-edge messages m_ij (E, D) from node features gathered at
the senders and per-edge geometry, then sums them into the receivers (N, D). Autograd keeps
every per-edge intermediate of the message (tensor-product outputs, radial-MLP activations,
E x hundreds of floats) until the backward pass: for the MACE-style model that is ~3 MB per
atom at 42 neighbours, and it decides the largest system that fits on a GPU.

``EdgeMessages`` is the one place that does something about it. A layer module subclasses
it, writes ``messages(nodes, edges, senders)`` (the per-edge part only) and calls
``aggregate``. With ``edge_chunk`` = C > 0 and more than C edges, ``aggregate`` runs the
edges in chunks of about C (whole receivers: edges sorted by receiver, a chunk's sums are
the rows of its atoms), each under ``torch.utils.checkpoint`` (non-reentrant): a chunk's
messages are summed into its atoms at once and its activations are dropped, then recomputed
chunk by chunk in the backward pass. Peak memory then holds the node tensors plus ONE
chunk's activations, at the price of computing the messages twice (forward and backward).
``RowChunked`` does the same over atoms for per-atom modules with large activations (MACE's
symmetric contraction).
Forces, stress (autograd through the strain) and double backward (training with
``create_graph=True``) go through the recomputation unchanged; the sums differ from the
plain path only by float round-off (a different summation order).

Known cost besides the recomputation: the backward pass of a chunk's gather of sender
features writes a zero-filled (N, D) gradient (autograd's index backward), so the gathers
cost O(N D E / C) over a layer; at ~1M atoms and C = 131,072 edges that is ~320 full-size
writes per node tensor per layer (measure on the GPU before raising the chunk count).

The chunked path is Python-only: under TorchScript (``geoff export``, the LAMMPS plugin)
``aggregate`` always takes the plain path.

The knob: ``set_edge_chunk(model, C)`` (``GeoffCalculator(edge_chunk=C)``); 0 switches it
off. The modules' default ``DEFAULT_EDGE_CHUNK`` leaves small systems on the plain (fastest)
path and bounds the per-edge memory of large ones. ``GeoffCalculator``'s default,
``edge_chunk="auto"`` (``autochunk.py``), sets the chunk per call on CUDA: none when the graph
fits in the free GPU memory, else the largest that fits.
"""

from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import scatter_sum

# Edges per chunk (about 3,000 atoms at 42 neighbours): below it the plain path runs, above
# it chunks of this size bound the per-edge activations (MACE-style, 64 channels, float32:
# ~50 KB per edge, so ~6 GB for one chunk).
DEFAULT_EDGE_CHUNK = 2 ** 17


# One atom's activations in a ``RowChunked`` module weigh about as much as this many edges'
# messages (MACE-style, 64 channels, correlation 3: ~500 KB per atom, ~50 KB per edge).
ATOM_WEIGHT = 8


class EdgeMessages(nn.Module):
    """Base of the modules that sum per-edge messages into atoms (see the module docstring).

    Subclasses implement ``messages(nodes, edges, senders) -> [(E_c, ...)]``: ``nodes`` are
    node-level tensors (N, ...) gathered with ``senders`` (E_c,), ``edges`` the per-edge
    tensors of the chunk (E_c, ...): first what ``radial_terms`` returned, then the other edge
    tensors ``aggregate`` was given. ``radial_terms(inputs)`` is the part of the messages that
    depends on the distance only (filter networks, radial MLPs): given ``edge_pair``
    (``geoff.graph.add_edge_pairs``) it runs once per pair of reverse edges on the plain path
    and its rows are copied to both edges (half the work on a full neighbour list; on the
    chunked path it runs per chunk on every edge). Subclasses may also override
    ``finish(sums)``, a per-atom map of the summed messages [(n, ...)] (e.g. the output linear
    of a convolution): it runs inside each chunk, so wide sums are never kept for all atoms.
    A fused kernel that gathers, computes and sums in one step overrides ``sums`` instead
    (``cueq.CueqConvolution``). ``edge_chunk``: edges per chunk, 0 = never chunk.
    """

    edge_chunk: int

    def __init__(self, edge_chunk: int = DEFAULT_EDGE_CHUNK):
        super().__init__()
        self.edge_chunk = int(edge_chunk)

    def messages(self, nodes: List[Tensor], edges: List[Tensor], senders: Tensor) -> List[Tensor]:
        # A plain string: TorchScript may compile this stub (it cannot take type(self)).
        raise NotImplementedError("an EdgeMessages subclass must implement messages")

    def radial_terms(self, inputs: List[Tensor]) -> List[Tensor]:
        """Distance-only factors of the messages from rows of ``inputs`` (identity here)."""
        return inputs

    def finish(self, sums: List[Tensor]) -> List[Tensor]:
        """Per-atom map of the message sums [(n, ...)] (identity unless overridden)."""
        return sums

    def aggregate(self, nodes: List[Tensor], radial_inputs: List[Tensor], edges: List[Tensor],
                  edge_index: Tensor, n_nodes: int,
                  edge_pair: Optional[Tensor] = None) -> List[Tensor]:
        """``finish`` of the per-receiver sums of ``messages``: [(n_nodes, ...)].

        ``radial_inputs``: one row per edge, or one per pair when ``edge_pair`` (E,) is given.
        """
        n_edges = edge_index.shape[1]
        if torch.jit.is_scripting() or self.edge_chunk <= 0 or n_edges <= self.edge_chunk:
            weights = self.radial_terms(radial_inputs)
            if edge_pair is not None:
                weights = [w.index_select(0, edge_pair) for w in weights]
            return self.finish(self.sums(nodes, weights + edges, edge_index[0], edge_index[1],
                                         n_nodes))
        if edge_pair is not None:  # the inputs (a few numbers per edge) to every edge
            radial_inputs = [x.index_select(0, edge_pair) for x in radial_inputs]
        return self._aggregate_chunked(nodes, radial_inputs, edges, edge_index, n_nodes)

    def sums(self, nodes: List[Tensor], edges: List[Tensor], receivers: Tensor, senders: Tensor,
             n_nodes: int) -> List[Tensor]:
        """Per-receiver sums of ``messages`` [(n_nodes, ...)]; a fused kernel may override it."""
        return [scatter_sum(m, receivers, n_nodes) for m in self.messages(nodes, edges, senders)]

    @torch.jit.unused
    def _aggregate_chunked(self, nodes: List[Tensor], radial_inputs: List[Tensor],
                           edges: List[Tensor], edge_index: Tensor,
                           n_nodes: int) -> List[Tensor]:
        n_radial = len(radial_inputs)
        edge_index, edges = _sorted_by_receiver(edge_index, radial_inputs + edges)
        receivers, senders = edge_index[0], edge_index[1]
        pieces: List[List[Tensor]] = []
        for a, b, lo, hi in _receiver_chunks(receivers, n_nodes, self.edge_chunk):
            def chunk_sum(a=a, b=b, lo=lo, hi=hi):
                chunk = [e[lo:hi] for e in edges]
                weights = self.radial_terms(chunk[:n_radial])
                return tuple(self.finish(self.sums(nodes, weights + chunk[n_radial:],
                                                   receivers[lo:hi] - a, senders[lo:hi], b - a)))

            # Non-reentrant: works with torch.autograd.grad, create_graph and the tensors the
            # closure captures; messages draw no random numbers: no RNG state to restore.
            pieces.append(list(checkpoint(chunk_sum, use_reentrant=False,
                                          preserve_rng_state=False)))
        return [torch.cat([p[k] for p in pieces]) for k in range(len(pieces[0]))]


class RowChunked(nn.Module):
    """Base of per-atom modules with large activations (MACE's symmetric contraction).

    Subclasses implement ``rows(inputs) -> (n, ...)`` on row-aligned inputs [(n, ...)] and
    call ``map_rows``: above ``edge_chunk // ATOM_WEIGHT`` atoms it runs atom chunks under
    ``torch.utils.checkpoint`` (activations recomputed in the backward pass), otherwise
    plain. The knob is the same ``edge_chunk`` as ``EdgeMessages``'s.
    """

    edge_chunk: int

    def __init__(self, edge_chunk: int = DEFAULT_EDGE_CHUNK):
        super().__init__()
        self.edge_chunk = int(edge_chunk)
        self.atom_weight = ATOM_WEIGHT  # an instance attribute, for TorchScript

    def rows(self, inputs: List[Tensor]) -> Tensor:
        raise NotImplementedError("a RowChunked subclass must implement rows")

    def map_rows(self, inputs: List[Tensor]) -> Tensor:
        """``rows(inputs)``, in checkpointed atom chunks when there are many atoms."""
        chunk = self.edge_chunk // self.atom_weight
        if torch.jit.is_scripting() or chunk <= 0 or inputs[0].shape[0] <= chunk:
            return self.rows(inputs)
        return self._map_rows_chunked(inputs, chunk)

    @torch.jit.unused
    def _map_rows_chunked(self, inputs: List[Tensor], chunk: int) -> Tensor:
        pieces = []
        for a in range(0, inputs[0].shape[0], chunk):
            rows = [x[a:a + chunk] for x in inputs]
            pieces.append(checkpoint(self.rows, rows, use_reentrant=False,
                                     preserve_rng_state=False))
        return torch.cat(pieces)


def _sorted_by_receiver(edge_index: Tensor, edges: List[Tensor]):
    """The edges ordered by receiver (graphs from ``geoff.graph`` already are: no copy)."""
    receivers = edge_index[0]
    if bool((receivers[1:] >= receivers[:-1]).all()):
        return edge_index, edges
    order = torch.argsort(receivers, stable=True)
    return edge_index[:, order], [e[order] for e in edges]


def _receiver_chunks(receivers: Tensor, n_nodes: int, edge_chunk: int):
    """(first atom, end atom, first edge, end edge) of chunks of whole receivers.

    ``receivers`` (E,) sorted. Each chunk holds about ``edge_chunk`` edges (more only when
    one atom has more) and every atom, with or without edges, is in exactly one chunk: the
    chunks' sums concatenate to the (N, ...) result, with no N-sized tensor per chunk.
    """
    atoms = torch.arange(n_nodes + 1, device=receivers.device)
    ptr = torch.searchsorted(receivers, atoms)  # (N + 1,): first edge of each atom
    starts = torch.arange(0, receivers.shape[0], edge_chunk, device=receivers.device)
    cuts = torch.searchsorted(ptr, starts).tolist() + [n_nodes]  # first atom of each chunk
    ptr = ptr.tolist()
    bounds = sorted(set([0] + cuts))
    return [(a, b, ptr[a], ptr[b]) for a, b in zip(bounds[:-1], bounds[1:])]


def set_edge_chunk(model: nn.Module, edge_chunk: int) -> nn.Module:
    """Set ``edge_chunk`` (edges per chunk, 0 = off) on every chunking module in ``model``."""
    if isinstance(edge_chunk, str) or not float(edge_chunk).is_integer():
        raise ValueError(f"edge_chunk must be an int (edges per chunk, 0 = off), got "
                         f"{edge_chunk!r}; 'auto' is chosen per call: "
                         "GeoffCalculator(edge_chunk='auto') or geoff.potentials.autochunk")
    if edge_chunk < 0:
        raise ValueError(f"edge_chunk must be >= 0 (0 switches chunking off), got {edge_chunk}")
    for module in model.modules():
        if isinstance(module, (EdgeMessages, RowChunked)):
            module.edge_chunk = int(edge_chunk)
    return model

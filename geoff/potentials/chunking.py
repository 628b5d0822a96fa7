"""Edge chunking with recomputation: message sums whose per-edge activations are not kept.

A message-passing layer computes per-edge messages m_ij (E, D) from node features gathered at
the senders and per-edge geometry, then sums them into the receivers (N, D). Autograd keeps
every per-edge intermediate of the message (tensor-product outputs, radial-MLP activations,
E x hundreds of floats) until the backward pass: for the MACE-style model that is ~3 MB per
atom at 42 neighbours, and it decides the largest system that fits on a GPU.

``EdgeMessages`` is the one place that does something about it. A layer module subclasses
it, writes ``messages(nodes, edges, senders)`` (the per-edge part only) and calls
``aggregate``. With ``edge_chunk`` = C > 0 and more than C edges, ``aggregate`` runs the
edges in chunks of C, each under ``torch.utils.checkpoint`` (non-reentrant): a chunk's
messages are summed into the atoms at once and its activations are dropped, then recomputed
chunk by chunk in the backward pass. Peak memory then holds the node tensors plus ONE
chunk's activations, at the price of computing the messages twice (forward and backward).
Forces, stress (autograd through the strain) and double backward (training with
``create_graph=True``) go through the recomputation unchanged; the sums differ from the
plain path only by float round-off (a different summation order).

The chunked path is Python-only: under TorchScript (``geoff export``, the LAMMPS plugin)
``aggregate`` always takes the plain path.

The knob: ``set_edge_chunk(model, C)`` (``GeoffCalculator(edge_chunk=C)``); 0 switches it
off. The default ``DEFAULT_EDGE_CHUNK`` leaves small systems on the plain (fastest) path and
bounds the per-edge memory of large ones.
"""

from typing import List

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import scatter_sum

# Edges per chunk (about 3,000 atoms at 42 neighbours): below it the plain path runs, above
# it chunks of this size bound the per-edge activations (MACE-style, 64 channels, float32:
# ~50 KB per edge, so ~6 GB for one chunk).
DEFAULT_EDGE_CHUNK = 2 ** 17


class EdgeMessages(nn.Module):
    """Base of the modules that sum per-edge messages into atoms (see the module docstring).

    Subclasses implement ``messages(nodes, edges, senders) -> [(E_c, ...)]``: ``nodes`` are
    node-level tensors (N, ...) gathered with ``senders`` (E_c,), ``edges`` the per-edge
    tensors of the chunk (E_c, ...). ``edge_chunk``: edges per chunk, 0 = never chunk.
    """

    edge_chunk: int

    def __init__(self, edge_chunk: int = DEFAULT_EDGE_CHUNK):
        super().__init__()
        self.edge_chunk = int(edge_chunk)

    def messages(self, nodes: List[Tensor], edges: List[Tensor], senders: Tensor) -> List[Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not implement messages")

    def aggregate(self, nodes: List[Tensor], edges: List[Tensor], edge_index: Tensor,
                  n_nodes: int) -> List[Tensor]:
        """Per receiver, the sum of ``messages`` over its edges: [(n_nodes, ...)]."""
        n_edges = edge_index.shape[1]
        if torch.jit.is_scripting() or self.edge_chunk <= 0 or n_edges <= self.edge_chunk:
            out = self.messages(nodes, edges, edge_index[1])
            return [scatter_sum(m, edge_index[0], n_nodes) for m in out]
        return self._aggregate_chunked(nodes, edges, edge_index, n_nodes)

    @torch.jit.unused
    def _aggregate_chunked(self, nodes: List[Tensor], edges: List[Tensor], edge_index: Tensor,
                           n_nodes: int) -> List[Tensor]:
        def chunk_sum(lo: int, hi: int):
            receivers, senders = edge_index[0, lo:hi], edge_index[1, lo:hi]
            out = self.messages(nodes, [e[lo:hi] for e in edges], senders)
            return tuple(scatter_sum(m, receivers, n_nodes) for m in out)  # (N, ...) each

        total = None
        for lo in range(0, edge_index.shape[1], self.edge_chunk):
            hi = min(lo + self.edge_chunk, edge_index.shape[1])
            # Non-reentrant: works with torch.autograd.grad, create_graph and tensors the
            # closure captures; no random numbers in messages, so no RNG state to restore.
            part = checkpoint(chunk_sum, lo, hi, use_reentrant=False, preserve_rng_state=False)
            total = list(part) if total is None else [t + p for t, p in zip(total, part)]
        return total


def set_edge_chunk(model: nn.Module, edge_chunk: int) -> nn.Module:
    """Set ``edge_chunk`` (edges per chunk, 0 = off) on every ``EdgeMessages`` in ``model``."""
    if edge_chunk < 0:
        raise ValueError(f"edge_chunk must be >= 0 (0 switches chunking off), got {edge_chunk}")
    for module in model.modules():
        if isinstance(module, EdgeMessages):
            module.edge_chunk = int(edge_chunk)
    return model

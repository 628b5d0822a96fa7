"""Edge explanations of per-atom predictions: a regression GNNExplainer.

For atom ``i`` and a per-atom output ``y_i`` (a property head, or the per-atom energy), learn
a soft mask ``m_e = sigmoid(w_e)`` over the directed edges of ``i``'s receptive field (edges
whose receiver is at most ``n_layers - 1`` hops from ``i``: the only edges ``y_i`` depends
on) that keeps the prediction while using few edges::

    loss = ((y_i(m) - y_i(1)) / tolerance)^2 + sparsity * mean(m) + entropy * mean(H(m))

``H(m) = -m log m - (1 - m) log(1 - m)`` pushes the mask to 0 or 1. The mask multiplies every
message along its edge through ``graph["edge_mask"]`` (``representation.py``): exact for
SchNet, PaiNN, EGNN, NequIP, MACE, SymGNN and FAENet with global frames (a mask of 0 removes
the edge; tested), approximate for FAENet's local frames (the masked neighbour still shapes
the PCA frame) and DimeNet++ (the mask scales the edge's radial basis only).

Fidelity (in the output's unit): ``removed`` = |y(top-k edges masked out) - y(1)| (large:
the top edges matter), ``kept`` = |y(only the top-k edges of the field) - y(1)| (small: they
suffice). ``explain_atom`` returns an ``Explanation``; ``global_importance`` aggregates many
atoms by pair type and distance shell; ``plot_*`` and ``Explanation.to_json`` write files.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .graph import atoms_to_graph
from .inference import frozen


@dataclass
class Explanation:
    """One atom's explanation. Edges are directed ``(receiver, sender)`` with their image
    ``shift`` (Å); ``importance`` is the learned mask in [0, 1]."""

    atom: int
    output: str
    prediction: float
    edges: List[Dict] = field(default_factory=list)  # sorted by importance, descending
    fidelity: Dict[str, float] = field(default_factory=dict)
    top_k: int = 0
    steps: int = 0

    def top(self, k: Optional[int] = None) -> List[Dict]:
        return self.edges[: self.top_k if k is None else k]

    def to_json(self, path, max_edges: Optional[int] = None) -> None:
        """Write the explanation; ``max_edges`` keeps only the most important edges (a
        3-layer field holds ~5,000 edges: ~1 MB) and records how many there were."""
        data = asdict(self)
        data["n_edges"] = len(self.edges)
        if max_edges is not None:
            data["edges"] = data["edges"][:max_edges]
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")


def receptive_edges(edge_index: torch.Tensor, atom: int, n_layers: int) -> torch.Tensor:
    """Boolean (E,): edges whose receiver is at most ``n_layers - 1`` hops from ``atom``."""
    receiver, sender = edge_index[0], edge_index[1]
    n_atoms = int(edge_index.max()) + 1 if edge_index.numel() else atom + 1
    near = torch.zeros(max(n_atoms, atom + 1), dtype=torch.bool, device=edge_index.device)
    near[atom] = True
    for _ in range(n_layers - 1):  # information flows sender -> receiver
        near = near.clone().index_fill_(0, sender[near[receiver]], True)
    return near[receiver]


def _output_key(model, output: Optional[str]) -> str:
    names = list(getattr(model, "properties", []))
    key = output or (names[0] if names else "energies")
    if key != "energies" and key not in names:
        raise ValueError(f"the model has no per-atom output {key!r}; it has "
                         f"{['energies'] + names}")
    return key


def _predict(model, graph, key: str, atom: int, mask: Optional[torch.Tensor]) -> torch.Tensor:
    g = dict(graph)
    if mask is not None:
        g["edge_mask"] = mask
    return model(g, compute_forces=False)[key][atom]


def explain_atom(model, atoms, atom: int, output: Optional[str] = None, steps: int = 200,
                 lr: float = 0.1, sparsity: float = 0.05, entropy: float = 0.05,
                 tolerance: float = 0.01, top_k: int = 10, seed: int = 0,
                 device: str = "cpu") -> Explanation:
    """Learn the edge mask of atom ``atom``'s prediction (see the module docstring).

    ``tolerance``: the prediction change (output unit, e.g. eV) that costs as much as the
    penalties; ``top_k``: edges counted as "top" for the fidelity figures; ``device``: where
    the mask is learned (``"cuda"`` is ~30x faster for a 3-layer model on a 150-atom glass).
    """
    # a private float64 copy: only the mask learns
    model = frozen(model, device=device, dtype="float64")
    rep = getattr(model, "representation", None)  # None: a wrapper that masks by itself
    if rep is not None and not getattr(rep, "edge_gate", ""):
        raise ValueError(f"{model.model_name or type(rep).__name__} does not "
                         "apply graph['edge_mask'] to its messages (no EDGE_GATE): explain a "
                         "model that does (schnet, painn, egnn, nequip, mace, symgnn, faenet)")
    key = _output_key(model, output)
    graph = atoms_to_graph(atoms, model, dtype=torch.float64, device=device)
    dtype = graph["positions"].dtype
    edge_index = graph["edge_index"]
    field_ = receptive_edges(edge_index, atom, model.n_layers)
    n_field = int(field_.sum())
    if n_field == 0:
        raise ValueError(f"atom {atom} has no edges within the cutoff: nothing to explain")
    with torch.no_grad():
        reference = float(_predict(model, graph, key, atom, None))
    gen = torch.Generator().manual_seed(seed)
    logits = (2.0 + 0.1 * torch.randn(n_field, generator=gen, dtype=dtype)).to(
        edge_index.device).requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    ones = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
    for _ in range(steps):
        m = torch.sigmoid(logits)
        mask = ones.masked_scatter(field_, m)
        pred = _predict(model, graph, key, atom, mask)
        ent = -(m * torch.log(m + 1e-12) + (1 - m) * torch.log(1 - m + 1e-12))
        loss = ((pred - reference) / tolerance) ** 2 + sparsity * m.mean() * n_field ** 0.5 \
            + entropy * ent.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    importance = torch.sigmoid(logits).detach().cpu()
    return _explanation(model, atoms, graph, key, atom, reference, field_, importance, top_k,
                        steps)


def _explanation(model, atoms, graph, key, atom, reference, field_, importance, top_k,
                 steps) -> Explanation:
    device = graph["edge_index"].device
    edge_index, shifts = graph["edge_index"].cpu(), graph["shifts"].cpu()
    pos = graph["positions"].cpu()
    index = torch.nonzero(field_.cpu()).reshape(-1)
    order = torch.argsort(importance, descending=True)
    k = min(top_k, len(order))
    symbols = atoms.get_chemical_symbols()
    ranked = index[order]  # edge ids, most important first
    recv, send = edge_index[0, ranked].tolist(), edge_index[1, ranked].tolist()
    dist = torch.linalg.norm(pos[edge_index[1, ranked]] - pos[edge_index[0, ranked]]
                             + shifts[ranked], dim=-1).tolist()
    edges = [{"edge": int(e), "receiver": i, "sender": j, "pair": _pair(symbols[i], symbols[j]),
              "distance": d, "shift": shifts[e].tolist(), "importance": float(w)}
             for e, i, j, d, w in zip(ranked.tolist(), recv, send, dist, importance[order])]
    top = ranked[:k].to(device)
    dtype = graph["positions"].dtype
    with torch.no_grad():
        removed = torch.ones(edge_index.shape[1], dtype=dtype, device=device)
        removed[top] = 0.0
        kept = torch.ones(edge_index.shape[1], dtype=dtype, device=device)
        kept[index.to(device)] = 0.0
        kept[top] = 1.0
        fid = {"removed": abs(float(_predict(model, graph, key, atom, removed)) - reference),
               "kept": abs(float(_predict(model, graph, key, atom, kept)) - reference),
               "none": abs(float(_predict(model, graph, key, atom, (~field_).to(dtype)))
                           - reference),
               "field_edges": int(field_.sum())}
    return Explanation(atom=atom, output=key, prediction=reference, edges=edges, fidelity=fid,
                       top_k=k, steps=steps)


def _pair(a: str, b: str) -> str:
    return "-".join(sorted((a, b)))


def global_importance(explanations: Sequence[Explanation],
                      shells: Sequence[float] = (3.4, 5.0)) -> Dict[str, Dict[str, float]]:
    """Mean importance by pair type and distance shell: ``{pair: {shell label: mean}}``.

    Shell labels: ``"r<3.4"``, ``"3.4-5.0"``, ``"r>5.0"`` for the default ``shells`` (Å).
    Also ``"_count"`` entries with the number of edges behind each mean.
    """
    edges_ = [0.0] + list(shells) + [np.inf]
    labels = [f"r<{shells[0]}"] + [f"{a}-{b}" for a, b in zip(shells[:-1], shells[1:])] \
        + [f"r>{shells[-1]}"]
    sums: Dict[str, Dict[str, List[float]]] = {}
    for ex in explanations:
        for e in ex.edges:
            b = int(np.searchsorted(edges_, e["distance"], side="right") - 1)
            sums.setdefault(e["pair"], {}).setdefault(labels[b], []).append(e["importance"])
    out: Dict[str, Dict[str, float]] = {}
    for pair in sorted(sums):
        out[pair] = {lab: float(np.mean(sums[pair][lab])) for lab in labels if lab in sums[pair]}
        out[pair]["_count"] = {lab: len(sums[pair][lab]) for lab in labels if lab in sums[pair]}
    return out

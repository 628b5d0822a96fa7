"""Weighted losses on energy per atom, forces, stress and per-atom energies.

Each term is a mean over the labelled rows of a penalty of the residual:

* ``energy``: (E_pred − E_ref) / n_atoms per structure (eV/atom);
* ``forces``: force components (eV/Å); for ``force_head="direct"`` the model's ``forces`` are
  the direct head's, for ``"both"`` they are the conservative ones and ``direct_forces`` (the
  head's) get their own term against the same labels;
* ``stress``: the 9 stress components (eV/Å³);
* ``energies``: per-atom energies (eV);
* ``target``: a per-atom property (config ``target``: the model output of that name against
  the data's per-atom array; its unit, e.g. eV for barriers), over labelled atoms only.

``total = Σ_k weight_k · Σ penalty(residual_k) / count_k`` where ``count_k`` counts labelled
components in the *global* batch (all ranks), so data-parallel shards add up exactly.
Penalties: ``"mse"`` (r²) or ``"huber"`` (r²/2 below ``delta``, linear above).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .dataset import mask_key

# loss term -> (label it is compared with, components per labelled row)
TERMS: Dict[str, Tuple[str, int]] = {
    "energy": ("energy", 1),
    "forces": ("forces", 3),
    "direct_forces": ("forces", 3),
    "stress": ("stress", 9),
    "energies": ("energies", 1),
    "target": ("target", 1),
}
# metric name -> (term, factor to the reported unit, unit)
UNITS = {"energy": (1e3, "meV/atom"), "forces": (1e3, "meV/Å"), "direct_forces": (1e3, "meV/Å"),
         "stress": (1e3, "meV/Å³"), "energies": (1e3, "meV"),
         "target": (1.0, "target unit")}
# The sums a Loss call returns (per term) plus the running loss and step count of an epoch.
STAT_KEYS = [f"{t}_{s}" for t in TERMS for s in ("pen", "abs", "sq", "n")] + ["loss", "steps"]
_UNIT_TAG = {"meV/atom": "meV_atom", "meV/Å": "meV_A", "meV/Å³": "meV_A3", "meV": "meV",
             "target unit": "unit"}


def metric_column(key: str, split: str = "") -> str:
    """A metric's name with its unit, as in metrics.csv and test_metrics.json.

    ``metric_column("forces_mae", "val")`` -> ``"val_forces_mae_meV_A"``; without a split,
    ``"forces_mae_meV_A"``.
    """
    term = key.rsplit("_", 1)[0]
    name = f"{key}_{_UNIT_TAG[UNITS[term][1]]}"
    return f"{split}_{name}" if split else name


def residuals(out: Dict[str, Tensor], batch: Dict[str, Tensor],
              target: Optional[str] = None) -> Dict[str, Tuple[Tensor, Tensor]]:
    """term -> (residual rows (R, C), row mask (R,)) for every term the output can supply.

    ``target``: the model output compared with the ``target`` label (a property head's name).
    """
    res = {}
    atom_graph = batch["batch"]
    for term, (label, comps) in TERMS.items():
        key = target if term == "target" else term
        if key is None or key not in out or label not in batch:
            continue
        pred, ref = out[key], batch[label]
        mask = batch[mask_key(label)]  # (B,)
        if term == "energy":
            r = (pred - ref) / batch["n_atoms"]  # (B,)
        else:
            r = pred - ref
        if r.shape[0] != mask.shape[0]:  # per-atom quantity: structure mask -> atom mask
            mask = mask[atom_graph]
        res[term] = (r.reshape(r.shape[0], comps), mask)
    return res


class Loss:
    """``Loss(weights, kind="mse", huber_delta=0.01, target=None)``; ``weights`` maps term ->
    weight; ``target`` names the model output of the ``target`` term."""

    def __init__(self, weights: Dict[str, float], kind: str = "mse", huber_delta: float = 0.01,
                 target: Optional[str] = None):
        unknown = sorted(set(weights) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown loss terms {unknown}; known: {sorted(TERMS)}")
        if kind not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber', got {kind!r}")
        if kind == "huber" and not huber_delta > 0:
            raise ValueError(f"huber_delta must be positive, got {huber_delta}")
        self.weights = {k: float(w) for k, w in weights.items() if float(w) != 0.0}
        self.kind = kind
        self.delta = float(huber_delta)
        self.target = target

    def penalty(self, r: Tensor) -> Tensor:
        if self.kind == "mse":
            return r * r
        return torch.nn.functional.huber_loss(r, torch.zeros_like(r), reduction="none",
                                              delta=self.delta)

    def __call__(self, out: Dict[str, Tensor], batch: Dict[str, Tensor],
                 counts: Dict[str, int]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """``(total, stats)`` for one (local) batch; ``counts`` = global labelled rows per label.

        ``stats`` holds detached sums per term: ``<term>_pen`` (penalty), ``<term>_abs``,
        ``<term>_sq`` and ``<term>_n`` (labelled components), for metrics and validation.
        """
        res = residuals(out, batch, self.target)
        total = out["energy"].new_zeros(())
        stats: Dict[str, Tensor] = {}
        for term, (r, mask) in res.items():
            label, comps = TERMS[term]
            m = mask.unsqueeze(-1)
            pen = (self.penalty(r) * m).sum()
            w = self.weights.get(term, 0.0)
            if w:
                total = total + w * pen / max(counts[label] * comps, 1)
            rd = r.detach()
            stats[f"{term}_pen"] = pen.detach()
            stats[f"{term}_abs"] = (rd.abs() * m).sum()
            stats[f"{term}_sq"] = (rd * rd * m).sum()
            stats[f"{term}_n"] = mask.sum() * comps
        return total, stats

    def total_from_sums(self, sums: Dict[str, float]) -> float:
        """The loss of a whole set from accumulated ``stats`` (validation loss)."""
        total = 0.0
        for term, w in self.weights.items():
            n = sums.get(f"{term}_n", 0.0)
            if n > 0:
                total += w * sums[f"{term}_pen"] / n
        return total


def metrics_from_sums(sums: Dict[str, float]) -> Dict[str, float]:
    """``<term>_mae`` and ``<term>_rmse`` in meV/atom, meV/Å, meV/Å³, meV (labelled terms only)."""
    out = {}
    for term, (factor, _unit) in UNITS.items():
        n = sums.get(f"{term}_n", 0.0)
        if n > 0:
            out[f"{term}_mae"] = factor * sums[f"{term}_abs"] / n
            out[f"{term}_rmse"] = factor * (sums[f"{term}_sq"] / n) ** 0.5
    return out

"""Per-element reference energies and the energy scale, fitted on the training set.

The model predicts ``e_i = scale * head(h_i) + e_{z_i}``. Fitting ``e_s`` by least squares
(``E ≈ Σ_s count_s · e_s``) removes the large composition-dependent part of the energy, so the
network learns only the (small) interaction energy; ``scale`` makes the head's output O(1).
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from ..structure_checks import record_training_distance, smallest_graph_distance
from .dataset import GraphDataset


def composition_matrix(dataset: GraphDataset, n_species: int, indices=None) -> np.ndarray:
    """(n_structures, n_species) counts of each species."""
    idx = range(len(dataset)) if indices is None else indices
    return np.stack([np.bincount(dataset[int(k)]["species"].cpu().numpy(), minlength=n_species)
                     for k in idx]).astype(np.float64)


def fit_atomic_energies(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Least-squares ``e_s`` in ``energies ≈ counts @ e_s`` (eV per atom of each species).

    Species absent from every structure get 0. When compositions do not determine all ``e_s``
    (e.g. every structure is Cu64Zr36) the minimum-norm solution is returned: any split of the
    shift between the species fits the data equally well.
    """
    counts = np.asarray(counts, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    if counts.ndim != 2 or counts.shape[0] != energies.shape[0]:
        raise ValueError(f"counts {counts.shape} and energies {energies.shape} do not match")
    out = np.zeros(counts.shape[1])
    present = counts.sum(axis=0) > 0
    if energies.size == 0 or not present.any():
        return out
    sol, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    out[present] = sol
    return out


def normalisation(dataset: GraphDataset, species: Sequence[str], indices=None,
                  atomic_energies="fit", energy_scale="auto") -> Dict[str, object]:
    """Shift ``atomic_energies`` (eV, one per species) and ``scale`` (eV) for ``set_normalisation``.

    Args:
        atomic_energies: ``"fit"`` (least squares on the structures with energies), ``"zero"``,
            or a mapping ``{symbol: eV}`` (species it does not name get 0).
        energy_scale: ``"auto"`` (RMS of force components; RMS of the per-atom residual energy
            when no structure has forces), or a number in eV.

    Returns ``{"atomic_energies": np.ndarray, "scale": float, "source": str,
    "min_distance": float}`` (the shortest pair distance of the structures, Å).
    """
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    n_species = len(species)
    counts = composition_matrix(dataset, n_species, idx)
    has_e = dataset.has["energy"][idx]
    energies = np.array([float(dataset[int(k)]["energy"][0]) for k in idx])

    if isinstance(atomic_energies, str) and atomic_energies == "fit":
        shift = fit_atomic_energies(counts[has_e], energies[has_e])
    elif isinstance(atomic_energies, str) and atomic_energies == "zero":
        shift = np.zeros(n_species)
    elif isinstance(atomic_energies, dict):
        unknown = sorted(set(atomic_energies) - set(species))
        if unknown:
            raise ValueError(f"atomic_energies names {unknown}, not in model species {list(species)}")
        shift = np.array([float(atomic_energies.get(s, 0.0)) for s in species])
    else:
        raise ValueError("atomic_energies must be 'fit', 'zero' or a mapping {symbol: eV}, "
                         f"got {atomic_energies!r}")

    if isinstance(energy_scale, str):
        if energy_scale != "auto":
            raise ValueError(f"energy_scale must be 'auto' or a number of eV, got {energy_scale!r}")
        scale, source = _auto_scale(dataset, idx, counts, energies, has_e, shift)
    else:
        scale, source = float(energy_scale), "given"
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"energy_scale must be a positive number of eV, got {energy_scale}")
    # The closest contact the model sees in training sets its overlap threshold (Å).
    min_distance = min((smallest_graph_distance(dataset[int(k)]) for k in idx), default=np.inf)
    return {"atomic_energies": shift, "scale": scale, "source": source,
            "min_distance": float(min_distance)}


def _auto_scale(dataset, idx, counts, energies, has_e, shift):
    forces = [dataset[int(k)]["forces"].cpu().numpy() for k in idx if dataset.has["forces"][int(k)]]
    if forces:
        f = np.concatenate([x.reshape(-1) for x in forces])
        rms = float(np.sqrt(np.mean(f * f)))
        if rms > 0:
            return rms, "rms of force components"
    if has_e.any():
        n = counts[has_e].sum(axis=1)
        resid = (energies[has_e] - counts[has_e] @ shift) / n
        rms = float(np.sqrt(np.mean(resid * resid)))
        if rms > 0:
            return rms, "rms of per-atom residual energy"
    return 1.0, "default (no forces or energy spread)"


def target_normalisation(dataset: GraphDataset, species: Sequence[str], indices=None):
    """Per-element ``(shift, scale)`` of the per-atom target: mean and standard deviation of
    the labelled training atoms of each species (0 and 1 for a species without labels; the
    scale floored at 1e-6 of the overall spread so that one-valued species stay finite)."""
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    values, kinds = [], []
    for k in idx:
        g = dataset[int(k)]
        if "target" in g:
            m = g["target_mask"].cpu().numpy() > 0
            values.append(g["target"].cpu().numpy()[m])
            kinds.append(g["species"].cpu().numpy()[m])
    values = np.concatenate(values) if values else np.zeros(0)
    kinds = np.concatenate(kinds) if kinds else np.zeros(0, dtype=int)
    if values.size == 0:
        raise ValueError("no training atom has a value of the target: check the per-atom "
                         "array's name (--target) and that it is not all NaN")
    floor = 1e-6 * max(float(values.std()), 1e-12)
    shift, scale = np.zeros(len(species)), np.ones(len(species))
    for s in range(len(species)):
        v = values[kinds == s]
        if v.size:
            shift[s] = v.mean()
            scale[s] = max(float(v.std()), floor) if v.size > 1 else max(float(values.std()), 1.0)
    return shift, scale


def apply(model, norm: Dict[str, object]) -> None:
    model.set_normalisation(np.asarray(norm["atomic_energies"]), float(norm["scale"]))
    record_training_distance(model, float(norm.get("min_distance", np.inf)))


def describe(norm: Dict[str, object], species: Sequence[str]) -> str:
    shifts = ", ".join(f"{s} {e:+.4f}" for s, e in zip(species, norm["atomic_energies"]))
    return f"reference energies (eV/atom): {shifts}; scale {norm['scale']:.4f} eV ({norm['source']})"

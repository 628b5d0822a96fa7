"""Checks that a structure is one a model can be trusted on: finite numbers, a usable cell,
and no two atoms on top of each other.

Overlapping atoms (easy to make when concatenating structures) give a learned potential
inputs it never saw: measured on a 32-atom Cu cell with one atom moved onto another, SchNet
gave +0.16 eV with tiny forces, PaiNN 11.6 eV and NequIP NaN, none with an error. So every
graph built by ``geoff.graph.atoms_to_graph`` (the calculator, MD, training data) is checked.

The threshold (Å), ``overlap_threshold(model)``:

* ``OVERLAP_FRACTION`` (0.5) x the shortest pair distance in the model's training set, which
  the trainer stores in the model's config (key ``"min_train_distance"``; it travels with the
  checkpoint and the TorchScript export, where LAMMPS reads it). Closer than the closest
  contact it was trained on, a model extrapolates (the figures above); at half of it no
  healthy trajectory comes near the threshold (measured, EMT Cu over 3 ps: closest pair 0.82 x
  the nearest-neighbour distance at 600 K, 0.78 x at 1500 K), while duplicated and
  near-duplicated atoms are caught;
* never below ``OVERLAP_FLOOR`` (0.5 Å), which is also the threshold of models that carry no
  training distance (the shipped ones, models built by hand): no chemical bond is that short
  (H2, the shortest, is 0.74 Å), so no real structure is refused.

``min_distance=0`` (``GeoffCalculator(check_overlaps=False)``) turns the check off for users
who want such configurations on purpose (e.g. studying a model's repulsive wall).
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np
import torch

OVERLAP_FRACTION = 0.5
OVERLAP_FLOOR = 0.5  # Å
TRAINING_KEY = "min_train_distance"
OFF_HINT = ("if the close contact is intended, turn the check off: "
            "GeoffCalculator(..., check_overlaps=False), atoms_to_graph(..., min_distance=0), "
            "`geoff md --min-distance 0`")


class OverlapError(ValueError):
    """Two atoms (or an atom and its periodic image) closer than the overlap threshold."""


def training_min_distance(model) -> Optional[float]:
    """The shortest pair distance (Å) of the model's training set, if the model stores one."""
    try:
        value = json.loads(getattr(model, "config_json", "") or "{}").get(TRAINING_KEY)
    except (ValueError, AttributeError):
        return None
    return float(value) if value is not None and np.isfinite(value) and value > 0 else None


def record_training_distance(model, distance: float) -> None:
    """Store ``distance`` (Å) in ``model.config_json`` so checkpoints and exports carry it."""
    if not (np.isfinite(distance) and distance > 0):
        return
    config = json.loads(model.config_json)
    config[TRAINING_KEY] = round(float(distance), 6)
    model.config_json = json.dumps(config, sort_keys=True)


def overlap_threshold(model=None) -> float:
    """The default overlap threshold (Å) of ``model``: see the module docstring."""
    d_train = training_min_distance(model) if model is not None else None
    if d_train is None:
        return OVERLAP_FLOOR
    return max(OVERLAP_FLOOR, OVERLAP_FRACTION * d_train)


def shortest_edge(positions: np.ndarray, i: np.ndarray, j: np.ndarray, shifts: np.ndarray):
    """``(distance, i, j)`` of the shortest edge of a neighbour list (inf, -1, -1 if none)."""
    if len(i) == 0:
        return float("inf"), -1, -1
    if torch.is_tensor(i):  # a list built on the device (torch cell list): reduce it there
        x = torch.as_tensor(positions, dtype=shifts.dtype, device=shifts.device)
        d = torch.linalg.norm(x[j] - x[i] + shifts, dim=1)  # (E,)
        k = torch.argmin(d)
        # one transfer (one wait for the device) instead of one per number
        found = torch.stack([d[k].double(), i[k].double(), j[k].double()]).tolist()  # exact < 2^53
        return found[0], int(found[1]), int(found[2])
    d = np.linalg.norm(positions[j] - positions[i] + shifts, axis=1)
    k = int(np.argmin(d))
    return float(d[k]), int(i[k]), int(j[k])


def check_edge_lengths(positions, i, j, shifts, min_distance: float,
                       symbols: Optional[Sequence[str]] = None, shortest=None) -> None:
    """Raise ``OverlapError`` naming the closest pair if an edge is shorter than
    ``min_distance`` (Å). ``i, j, shifts`` is a neighbour list of ``geoff.graph``;
    ``shortest``: its ``shortest_edge`` when the list already found it."""
    if not min_distance or min_distance <= 0:
        return
    if shortest is None:
        if not torch.is_tensor(positions):  # a device list's positions stay on the device
            positions = np.asarray(positions, dtype=np.float64)
        shortest = shortest_edge(positions, i, j, shifts)
    d, a, b = shortest
    if d >= min_distance:
        return
    a, b = min(a, b), max(a, b)

    def name(k):
        return f"{k} ({symbols[k]})" if symbols is not None else f"{k}"

    if a == b:
        raise OverlapError(
            f"atom {name(a)} is {d:.4g} Å from its own periodic image, closer than the "
            f"{min_distance:g} Å overlap threshold: a periodic cell vector is too short; "
            f"check the cell (units, a missing repeat), or {OFF_HINT}")
    raise OverlapError(
        f"atoms {name(a)} and {name(b)} are {d:.4g} Å apart, closer than the "
        f"{min_distance:g} Å overlap threshold (atoms on top of each other, e.g. from "
        f"concatenating structures); remove or move one of them, or {OFF_HINT}")


def check_overlaps(positions, cell, pbc, min_distance: float,
                   symbols: Optional[Sequence[str]] = None) -> None:
    """Raise ``OverlapError`` if two atoms (or periodic images) are closer than
    ``min_distance`` Å. ``positions`` (N,3) Å, ``cell`` (3,3) rows, ``pbc`` (3,) bool."""
    from .graph import neighbour_list

    if not min_distance or min_distance <= 0 or len(positions) == 0:
        return
    positions = np.asarray(positions, dtype=np.float64)
    i, j, shifts = neighbour_list(positions, cell, pbc, float(min_distance))
    check_edge_lengths(positions, i, j, shifts, min_distance, symbols)


def check_numbers(positions, cell) -> None:
    """Raise ``ValueError`` if positions (N,3) or the cell (3,3) hold NaN or inf."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    bad = np.nonzero(~np.isfinite(positions).all(axis=1))[0]
    if len(bad):
        raise ValueError(f"the structure has non-finite (NaN or inf) positions, first at atom "
                         f"{int(bad[0])} ({len(bad)} atom(s)); fix the structure file or the "
                         "step that produced it")
    if not np.isfinite(np.asarray(cell, dtype=np.float64)).all():
        raise ValueError(f"the cell has non-finite (NaN or inf) entries: "
                         f"{np.asarray(cell).tolist()}; give the structure a finite cell")


def smallest_graph_distance(graph) -> float:
    """Shortest edge length (Å) of a Graph (inf if it has no edges)."""
    pos = graph["positions"].detach().cpu().double().numpy()
    i, j = graph["edge_index"].cpu().numpy()
    shifts = graph["shifts"].detach().cpu().double().numpy()
    return shortest_edge(pos, i, j, shifts)[0]

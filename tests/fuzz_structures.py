"""Hypothesis strategies for hostile structures, and a brute-force neighbour search.

``structures()`` draws ``ase.Atoms`` with 1-6 atoms of Cu/Zr and:

* a cell that is ordinary, strongly skewed, near-singular, huge (up to 1000 Å), tiny (down to
  0.01 Å) or absent (zeros), under every one of the 8 pbc combinations;
* positions anywhere from inside the cell to several cells outside it, or a molecule;
* optionally two coincident or near-coincident atoms, and optionally a NaN or inf in the
  positions or the cell.

``brute_force_edges(positions, cell, pbc, cutoff)`` enumerates explicit periodic images of
every pair (an independent check of ``geoff.graph.neighbour_list``).
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from hypothesis import strategies as st

CELL_KINDS = ("ordinary", "skewed", "near_singular", "huge", "tiny", "none")
FLOATS = dict(allow_nan=False, allow_infinity=False)


@st.composite
def cells(draw, kind: str) -> np.ndarray:
    """A (3,3) cell (rows are vectors, Å) of the given kind."""
    u = lambda lo, hi: draw(st.floats(lo, hi, **FLOATS))  # noqa: E731
    if kind == "none":
        return np.zeros((3, 3))
    if kind in ("ordinary", "huge", "tiny"):
        lo, hi = {"ordinary": (2.0, 12.0), "huge": (100.0, 1000.0), "tiny": (0.01, 2.0)}[kind]
        lengths = [u(lo, hi) for _ in range(3)]
        cell = np.diag(lengths)
        for i in range(3):
            for j in range(3):
                if i != j:
                    cell[i, j] = u(-0.3, 0.3) * lengths[i]
        return cell
    if kind == "skewed":
        L = [u(2.0, 10.0) for _ in range(3)]
        return np.array([[L[0], 0.0, 0.0],
                         [u(-10.0, 10.0) * L[0], L[1], 0.0],
                         [u(-10.0, 10.0) * L[0], u(-10.0, 10.0) * L[1], L[2]]])
    # near-singular: the third vector almost in the plane of the first two
    a = np.array([u(2.0, 8.0), u(-1.0, 1.0), u(-1.0, 1.0)])
    b = np.array([u(-1.0, 1.0), u(2.0, 8.0), u(-1.0, 1.0)])
    eps = 10.0 ** u(-9.0, -1.0)
    c = u(-2.0, 2.0) * a + u(-2.0, 2.0) * b + eps * np.cross(a, b) / np.linalg.norm(np.cross(a, b))
    return np.array([a, b, c])


@st.composite
def structures(draw, allow_bad_numbers: bool = True, symbols=("Cu", "Zr")):
    """An ``ase.Atoms`` drawn as in the module docstring; ``atoms.info["fuzz"]`` says how."""
    n = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(CELL_KINDS))
    cell = draw(cells(kind))
    pbc = np.array([draw(st.booleans()) for _ in range(3)])
    if kind == "none":
        pbc[:] = False  # no cell: a molecule (pbc without a cell is a "special" below)
    frac_range = draw(st.sampled_from([(0.0, 1.0), (-3.0, 4.0), (-1000.0, 1000.0)]))
    if kind == "none" or kind == "near_singular" or draw(st.booleans()):
        scale = draw(st.sampled_from([3.0, 10.0, 50.0]))
        pos = np.array([[draw(st.floats(0.0, scale, **FLOATS)) for _ in range(3)]
                        for _ in range(n)])
    else:
        frac = np.array([[draw(st.floats(*frac_range, **FLOATS)) for _ in range(3)]
                         for _ in range(n)])
        pos = frac @ cell
    special = draw(st.sampled_from(["none", "none", "coincident", "near_coincident",
                                    "pbc_without_cell"] + (["nan", "inf", "nan_cell"]
                                                           if allow_bad_numbers else [])))
    if special in ("coincident", "near_coincident") and n >= 2:
        delta = 0.0 if special == "coincident" else 10.0 ** draw(st.floats(-8.0, 0.0))
        pos[1] = pos[0] + delta * np.array([1.0, 0.3, -0.2])
    elif special == "pbc_without_cell":
        cell = np.zeros((3, 3))
        pbc = np.array([True, draw(st.booleans()), draw(st.booleans())])
    elif special in ("nan", "inf"):
        pos[draw(st.integers(0, n - 1)), draw(st.integers(0, 2))] = \
            np.nan if special == "nan" else np.inf * draw(st.sampled_from([1, -1]))
    elif special == "nan_cell":
        cell = cell.copy()
        cell[draw(st.integers(0, 2)), draw(st.integers(0, 2))] = np.nan
    names = [draw(st.sampled_from(symbols)) for _ in range(n)]
    atoms = Atoms(names, positions=pos, cell=cell, pbc=pbc)
    atoms.info["fuzz"] = f"{kind} cell, pbc {pbc.astype(int).tolist()}, {special}"
    return atoms


def _image_ranges(dx, cell, pbc, cutoff):
    """For pair vector dx (Å): the integer ranges of each periodic image index."""
    periodic = [k for k in range(3) if pbc[k]]
    ranges = []
    for k in range(3):
        if not pbc[k]:
            ranges.append(range(0, 1))
            continue
        others = np.array([cell[m] for m in periodic if m != k]).reshape(-1, 3)
        a = cell[k].copy()
        if len(others):  # the part of a_k orthogonal to the other periodic vectors
            q, _ = np.linalg.qr(others.T)
            a = a - q @ (q.T @ a)
        h = np.linalg.norm(a)
        u = a / h
        lo = int(np.ceil((-cutoff - dx @ u) / h)) - 1
        hi = int(np.floor((cutoff - dx @ u) / h)) + 1
        ranges.append(range(lo, hi + 1))
    return ranges


def brute_force_edges(positions, cell, pbc, cutoff, max_images=200_000):
    """``{(i, j): [shift vectors]}`` of all pairs closer than ``cutoff`` (Å), by enumerating
    images explicitly, or None if that would take more than ``max_images`` per pair."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    out = {}
    n = len(positions)
    for i in range(n):
        for j in range(n):
            dx = positions[j] - positions[i]
            ranges = _image_ranges(dx, cell, pbc, cutoff)
            if np.prod([len(r) for r in ranges]) > max_images:
                return None
            grid = np.stack(np.meshgrid(*[np.array(r) for r in ranges], indexing="ij"),
                            axis=-1).reshape(-1, 3)
            shifts = grid @ cell
            d = np.linalg.norm(dx + shifts, axis=1)
            keep = d < cutoff
            if i == j:
                keep &= np.any(grid != 0, axis=1)
            if keep.any():
                out[(i, j)] = shifts[keep]
    return out


@st.composite
def lammps_boxes(draw):
    """A LAMMPS box (prism, boundary p or s per dimension) with 1-6 atoms, as a dict.

    Box kinds: ordinary, skewed (tilts up to 3 box lengths), huge (up to 1000 Å) and thin
    (0.2-2 Å); atoms up to 3 boxes outside periodic dimensions, optionally (near-)coincident.
    LAMMPS allows a tilt only into a periodic dimension (xy needs y, xz and yz need z).
    """
    kind = draw(st.sampled_from(("ordinary", "skewed", "huge", "thin")))
    lo, hi = {"ordinary": (2.0, 12.0), "skewed": (2.0, 10.0), "huge": (100.0, 1000.0),
              "thin": (0.2, 2.0)}[kind]
    L = [draw(st.floats(lo, hi, **FLOATS)) for _ in range(3)]
    pbc = [draw(st.booleans()) for _ in range(3)]
    t = 3.0 if kind == "skewed" else 0.5
    xy = draw(st.floats(-t, t, **FLOATS)) * L[0] if pbc[1] else 0.0
    xz = draw(st.floats(-t, t, **FLOATS)) * L[0] if pbc[2] else 0.0
    yz = draw(st.floats(-t, t, **FLOATS)) * L[1] if pbc[2] else 0.0
    cell = np.array([[L[0], 0, 0], [xy, L[1], 0], [xz, yz, L[2]]])
    n = draw(st.integers(1, 6))
    frac = np.array([[draw(st.floats(-3.0, 4.0, **FLOATS)) if pbc[k] else
                      draw(st.floats(0.0, 1.0, **FLOATS)) for k in range(3)] for _ in range(n)])
    pos = frac @ cell
    special = draw(st.sampled_from(["none", "none", "coincident", "near_coincident"]))
    if special != "none" and n >= 2:
        delta = 0.0 if special == "coincident" else 10.0 ** draw(st.floats(-6.0, 0.0))
        pos[1] = pos[0] + delta * np.array([0.3, 0.5, -0.2])
    # create_atoms only places atoms inside the box along non-periodic dimensions
    frac = pos @ np.linalg.inv(cell)
    for k in range(3):
        if not pbc[k]:
            frac[:, k] = np.clip(frac[:, k], 0.02, 0.98)
    pos = frac @ cell
    return {"lx": L[0], "ly": L[1], "lz": L[2], "xy": xy, "xz": xz, "yz": yz, "pbc": pbc,
            "positions": pos.tolist(), "types": [draw(st.integers(1, 2)) for _ in range(n)],
            "fuzz": f"{kind} box, pbc {[int(p) for p in pbc]}, {special}"}


def lammps_box_atoms(case: dict) -> Atoms:
    """The ``ase.Atoms`` of a ``lammps_boxes`` case (types 1, 2 = Cu, Zr)."""
    cell = np.array([[case["lx"], 0, 0], [case["xy"], case["ly"], 0],
                     [case["xz"], case["yz"], case["lz"]]])
    atoms = Atoms([("Cu", "Zr")[t - 1] for t in case["types"]], positions=case["positions"],
                  cell=cell, pbc=case["pbc"])
    atoms.info["fuzz"] = case["fuzz"]
    return atoms

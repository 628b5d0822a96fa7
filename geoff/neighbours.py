"""Neighbour lists in torch (a cell list on the positions' own device) and their reuse.

``torch_neighbour_list`` returns the same edges as the matscipy path of
``geoff.graph.neighbour_list`` (same ``(i, j, shift)`` set, in another order) for every pbc
combination, triclinic cells and cells smaller than the cutoff (several periodic images of
an atom), but runs wherever the positions are: on a GPU it saves the copy to the host and the
CPU search that dominate a calculator call at large sizes.

``all_pairs`` (``AllPairs``) examines every pair under the minimum image, for molecules and for periodic
cells two cutoffs high, also for R replicas at once (``geoff.md.replica_forces``).

``NeighbourCache`` keeps a list built with ``cutoff + skin`` across MD steps and only
re-filters it by the cutoff while no atom has moved more than ``skin / 2`` (Verlet list).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .to_device import to_device

# Candidate pairs examined at once; bounds the search's memory (about 100 bytes a candidate).
CANDIDATE_CHUNK = 1 << 24
# Up to this many atoms in a periodic cell at least two cutoffs high, or with no periodic
# direction, every pair is examined (``all_pairs``): fewer tensor operations than the cell
# list, which is what a small system on a GPU waits for ((N, N, 3) float64 temporaries,
# 100 MB at 2,048 atoms; faster than the cell list up to 2,048 atoms on an H200, slower from
# 2,916); on a CPU, whose time goes into the arithmetic, only up to a few hundred (2 cores,
# 864 atoms: both 45 ms).
ALL_PAIRS_MAX_ATOMS = {"cuda": 2048, "cpu": 512}
SMALL_PRODUCT = 1 << 16  # rows: see _rows_times
NON_FINITE = "the structure has non-finite (NaN or inf) positions"


def _search_cell(positions: Tensor, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """The cell of the matscipy path (non-periodic axes replaced by vectors spanning the
    structure), computed from the bounding box alone so that only 6 numbers leave the device
    (none for a periodic cell)."""
    from .graph import _neighbour_cell

    if pbc.all():
        return _neighbour_cell(np.zeros((0, 3)), cell, pbc, cutoff)
    corners = torch.stack([positions.amin(0), positions.amax(0)]).cpu().double().numpy()
    if not np.isfinite(corners).all():  # NaN and inf reach the bounding box
        raise ValueError(NON_FINITE)
    return _neighbour_cell(corners, cell, pbc, cutoff)


def _bins(heights: np.ndarray, cutoff: float, n_atoms: int) -> np.ndarray:
    """Bins per axis: at least ``cutoff`` wide, and not many more than atoms (a sparse
    molecule in a large box would otherwise allocate millions of empty bins)."""
    n_bins = np.maximum(np.floor(heights / cutoff), 1).astype(np.int64)
    while n_bins.prod() > max(8 * n_atoms, 27) and n_bins.max() > 1:
        n_bins = np.maximum(n_bins // 2, 1)
    return n_bins


def too_many_neighbours(n_atoms: int, volume: float, cutoff: float) -> Optional[str]:
    """The error for a periodic cell whose density gives more than
    ``MAX_NEIGHBOURS_PER_ATOM`` neighbours within ``cutoff`` (almost certainly a unit
    mistake that would exhaust memory), or None."""
    from .graph import MAX_NEIGHBOURS_PER_ATOM

    expected = n_atoms / volume * 4.0 / 3.0 * np.pi * cutoff**3
    if expected <= MAX_NEIGHBOURS_PER_ATOM:
        return None
    return (f"cutoff {cutoff} Å gives about {expected:.0f} neighbours per atom (limit "
            f"{MAX_NEIGHBOURS_PER_ATOM}); is the cutoff in Å and the cell right?")


def cell_list_layout(heights: np.ndarray, pbc: np.ndarray, n_atoms: int, cutoff: float
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """(bins per axis, bin offsets to visit per axis) of the cell list for a search cell
    of these ``heights`` (Å)."""
    n_bins = _bins(heights, cutoff, n_atoms)
    reach = np.ceil(cutoff / (heights / n_bins)).astype(np.int64)
    reach[~pbc] = np.minimum(reach[~pbc], n_bins[~pbc])
    return n_bins, reach


def _stencil(n_bins: np.ndarray, reach: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
    """(strides (3,) of the flat bin index, offsets (K, 3) of the bins to visit, the index
    of the zero offset) of a cell list's layout."""
    strides = np.array([n_bins[1] * n_bins[2], n_bins[2], 1], dtype=np.int64)
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"),
                       -1).reshape(-1, 3)
    return strides, offsets, int(np.flatnonzero((offsets == 0).all(1))[0])


def _binned(x: Tensor, cell_t: Tensor, inverse: Tensor, nb: Tensor, strides: Tensor,
            pbc: np.ndarray) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(wrap (N, 3) images subtracted, wrapped positions (N, 3) Å inside the search cell,
    bin (N, 3) and flat bin (N,) of each atom) of float64 positions ``x`` (N, 3)."""
    frac = _rows_times(x, inverse)
    if pbc.all():  # wrap into [0, 1) and remember the image
        wrap = torch.floor(frac)
        frac = frac - wrap
    else:  # periodic axes wrap; the others are translated to start at 0
        periodic = to_device(pbc, x.device)
        wrap = torch.where(periodic, torch.floor(frac), torch.zeros_like(frac))
        frac = frac - wrap
        frac = torch.where(periodic, frac, frac - frac.amin(0))
    wrapped = _rows_times(frac, cell_t)
    atom_bin = torch.minimum((frac * nb).long(), nb - 1).clamp_min(0)
    return wrap, wrapped, atom_bin, (atom_bin * strides).sum(1)


def _bin_count(flat: Tensor, n_total: int) -> Tensor:
    """(n_total + 1,) atoms per bin, the last one the spare bin that no atom visits."""
    count = torch.zeros(n_total + 1, dtype=torch.long, device=flat.device)
    return count.index_add_(0, flat, torch.ones_like(flat))


def _bin_table(flat: Tensor, count: Tensor, slots: int, sentinel: int) -> Tensor:
    """table[b, s] (bins + 1, ``slots``): the s-th atom of bin b, or ``sentinel`` (an atom
    whose position is at infinity); atoms past ``slots`` in a bin are left out (they go to a
    spare column, dropped)."""
    order = torch.argsort(flat)
    sorted_bins = flat[order]
    rank = torch.arange(len(flat), device=flat.device) \
        - (torch.cumsum(count, 0) - count)[sorted_bins]
    table = torch.full((len(count), slots + 1), sentinel, dtype=torch.long, device=flat.device)
    table[sorted_bins, rank.clamp_max(slots)] = order
    return table[:, :slots]


def torch_neighbour_list(positions: Tensor, cell, pbc, cutoff: float
                         ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges within ``cutoff`` (Å) of every atom, on ``positions.device``.

    Args: positions (N, 3) Å (any float dtype; the search runs in float64), cell (3, 3) rows
    in Å, pbc (3,) bool, cutoff Å.
    Returns ``(i, j, shifts, images)``: int64 (E,), int64 (E,), float64 (E, 3) Cartesian
    shifts in Å with ``r_ij = x_j - x_i + shifts``, and int64 (E, 3) integer cell images
    (``shifts = images @ cell``).

    A cell list with a padded bin table: every atom looks at the (2 reach + 1)^3 bins around
    its own, each as a row of ``M`` slots (``M`` = the fullest bin's count). The candidates
    are then one dense (atoms, bins, M) block, so the search is a few dozen tensor operations
    and two host synchronisations (the fullest bin, the final ``nonzero``) whatever the size:
    small systems on a GPU are bound by launches, not by the candidates. Up to
    ``ALL_PAIRS_MAX_ATOMS`` atoms, a structure with no periodic direction, or a periodic cell
    two cutoffs high, has every pair examined instead (``all_pairs``: one synchronisation).
    """
    if not math.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be a positive number of Å, got {cutoff}")
    if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] == 0:
        raise ValueError(f"positions must be (N, 3) with N >= 1, got {tuple(positions.shape)}")
    device = positions.device
    n = positions.shape[0]
    x = positions.detach().to(torch.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    small = n <= ALL_PAIRS_MAX_ATOMS.get(device.type, 0)
    if small and not pbc.any():  # a molecule: no bounding box to read back
        return _all_pairs(x, None, cutoff)
    cell_np = _search_cell(x, np.asarray(cell, dtype=np.float64), pbc, cutoff)
    volume = abs(np.linalg.det(cell_np))
    if pbc.all():
        crowded = too_many_neighbours(n, volume, cutoff)
        if crowded:
            raise ValueError(crowded)
    heights = _heights(cell_np, volume)
    if small and pbc.all() and np.all(heights >= 2.0 * cutoff):
        return _all_pairs(x, _cell_and_inverse(cell_np, device), cutoff)
    n_bins, reach = cell_list_layout(heights, pbc, n, cutoff)
    n_total = int(n_bins.prod())
    strides, offsets, centre = _stencil(n_bins, reach)

    # the host's numbers go over in two copies (floats, integers) rather than one each
    floats = to_device(np.concatenate([cell_np, np.linalg.inv(cell_np)]), device)
    cell_t, inverse = floats[:3], floats[3:6]
    ints = to_device(np.concatenate([offsets, n_bins[None], strides[None]]), device)
    offsets_t, nb, strides_t = ints[:-2], ints[-2], ints[-1]

    wrap, wrapped, atom_bin, flat = _binned(x, cell_t, inverse, nb, strides_t, pbc)
    count = _bin_count(flat, n_total)
    # one read-back: the fullest bin, and the positions' sum, finite unless one is not (NaN
    # and inf bin anywhere, so this is the check's place)
    fullest, total = torch.stack([count.max().double(), x.sum()]).tolist()
    if not math.isfinite(total):
        raise ValueError(NON_FINITE)
    fullest = int(fullest)
    table = _bin_table(flat, count, fullest, n)
    far = torch.cat([wrapped, wrapped.new_full((1, 3), math.inf)])

    k, slots = offsets.shape[0], fullest
    chunk = max(1, CANDIDATE_CHUNK // (k * slots))
    parts = [_pairs(a, min(a + chunk, n), atom_bin, offsets_t, nb, pbc, strides_t, table,
                    far, cell_t, cutoff, centre, n_total) for a in range(0, n, chunk)]
    i, j, image = (torch.cat(p) if len(parts) > 1 else p[0] for p in zip(*parts))
    # Back from wrapped to the caller's positions: x = wrapped + wrap @ cell.
    wrap = wrap.long()
    images = image + wrap[i] - wrap[j]
    return i, j, _rows_times(images.double(), cell_t), images


def _rows_times(a: Tensor, m: Tensor) -> Tensor:
    """``a @ m`` for rows of 3 (``a`` (..., 3), ``m`` (3, 3)): up to ``SMALL_PRODUCT`` rows as
    a product and a sum, cheaper to launch than a BLAS call; beyond, the BLAS call, which
    needs no (..., 3, 3) temporary (3.9 GB for the 54M edges of 1M atoms)."""
    if a.numel() > 3 * SMALL_PRODUCT:
        return a @ m
    return (a.unsqueeze(-1) * m).sum(-2)


def _read_later(t: Tensor):
    """A function returning ``t.tolist()``: on CUDA ``t`` is copied to pinned host memory
    without waiting, and the function waits only for that copy, so a synchronisation the
    caller makes anyway in between (a ``nonzero``) brings it for free."""
    if not t.is_cuda:
        return t.tolist
    pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    pinned.copy_(t, non_blocking=True)
    landed = torch.cuda.Event()
    landed.record(torch.cuda.current_stream(t.device))  # t's device, not the default

    def read():
        landed.synchronize()
        return pinned.tolist()
    return read


def all_pairs_apply(cell, pbc, cutoff: float) -> bool:
    """Whether ``all_pairs`` is exact for this cell: no periodic direction (a molecule), or
    periodic in all three with every height (the distance between opposite faces) at least
    2 ``cutoff``."""
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not pbc.any():
        return True
    if not pbc.all():
        return False
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    volume = abs(np.linalg.det(cell))
    return bool(volume > 0 and np.all(_heights(cell, volume) >= 2.0 * cutoff))


def _heights(cell: np.ndarray, volume: float) -> np.ndarray:
    """(3,) Å: the distance between each pair of opposite faces of ``cell`` (volume / area)."""
    return volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)


def all_pairs(positions: Tensor, cell, pbc, cutoff: float
              ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges within ``cutoff`` (Å) by examining every pair, for cells where
    ``all_pairs_apply``; returns what ``torch_neighbour_list`` returns. ``AllPairs`` keeps
    the checked cell for repeated calls (one per MD step)."""
    return AllPairs(cell, pbc, cutoff, positions.device)(positions)


class AllPairs:
    """Every pair examined for one cell, ``pbc`` and ``cutoff`` (Å), checked once
    (``all_pairs_apply``, else ``ValueError``); call with positions (N, 3) Å, or (R, N, 3)
    for R replicas sharing the cell: then ``i``, ``j`` index the R N atoms replica after
    replica, and a replica's atoms meet only each other. Returns ``(i, j, shifts, images)``
    as ``torch_neighbour_list``.

    In a periodic cell two cutoffs high an edge's fractional components are each below 1/2
    in size (|f_k| = |r . b_k| <= |r| / h_k < cutoff / h_k), so the image of j within the
    cutoff of i, if any, is the one the rounded fractional difference names, and no atom
    meets its own images. (R, N, N, 3) float64 temporaries; one host synchronisation, the
    ``nonzero`` (non-finite positions raise ``ValueError``)."""

    def __init__(self, cell, pbc, cutoff: float, device="cpu"):
        if not all_pairs_apply(cell, pbc, cutoff):
            raise ValueError("all_pairs needs no periodic direction, or three with every cell "
                             f"height >= 2 cutoff ({2 * cutoff} Å); use torch_neighbour_list")
        self.cutoff = float(cutoff)
        self.mats = None  # no periodic direction
        if bool(np.asarray(pbc, dtype=bool).all()):
            self.mats = _cell_and_inverse(np.asarray(cell, dtype=np.float64).reshape(3, 3),
                                          torch.device(device))

    def __call__(self, positions: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return _all_pairs(positions.detach().to(torch.float64), self.mats, self.cutoff)


def _cell_and_inverse(cell_np: np.ndarray, device) -> Tensor:
    """(2, 3, 3) float64 on ``device``: the cell's rows and its inverse."""
    return to_device(np.stack([cell_np, np.linalg.inv(cell_np)]), device)


def _pair_mask(x: Tensor, mats: Optional[Tensor], cutoff: float
               ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """(within the cutoff (R, N, N) bool, squared distances (R, N, N) Å^2, the rounded
    fractional differences (R, N, N, 3) naming j's image, None without ``mats``) of every
    pair of float64 ``x`` (R, N, 3), an atom and itself excluded."""
    replicas, n = x.shape[0], x.shape[1]
    near = None
    if mats is not None:
        frac = _rows_times(x, mats[1])
        d = frac[:, None, :, :] - frac[:, :, None, :]  # (R, N, N, 3): frac_j - frac_i
        near = torch.round(d)
        r = (d - near).view(-1, 3) @ mats[0]  # (R N N, 3) Å, one large product
    else:
        r = (x[:, None, :, :] - x[:, :, None, :]).view(-1, 3)
    r2 = r.square().sum(-1).view(replicas, n, n)
    keep = r2 < cutoff * cutoff
    keep.diagonal(dim1=1, dim2=2).fill_(False)
    return keep, r2, near


def _all_pairs(x: Tensor, mats: Optional[Tensor], cutoff: float):
    """``AllPairs`` of float64 ``x`` (N, 3) or (R, N, 3), checked by the caller; ``mats``
    (``_cell_and_inverse``) None: no periodic direction."""
    x = x.unsqueeze(0) if x.ndim == 2 else x
    n = x.shape[1]
    periodic = mats is not None
    keep, _, near = _pair_mask(x, mats, cutoff)
    total = _read_later(x.sum())  # finite unless a position is not; lands with the nonzero
    rows = keep.view(-1).nonzero().squeeze(1)
    if not math.isfinite(total()):
        raise ValueError(NON_FINITE)
    first = torch.div(rows, n, rounding_mode="floor")  # replica * n + i
    j = rows - first * n + torch.div(first, n, rounding_mode="floor") * n
    if not periodic:
        zeros = torch.zeros(len(rows), 3, dtype=torch.float64, device=x.device)
        return first, j, zeros, zeros.long()
    images = near.view(-1, 3)[rows].neg().long()
    return first, j, _rows_times(images.double(), mats[0]), images


def _pairs(a: int, b: int, atom_bin, offsets, nb, pbc, strides, table, far, cell_t,
           cutoff, centre, empty):
    """Pairs (i, j, image of j) with atoms a <= i < b in the wrapped frame, within cutoff."""
    cand, image, _, keep = _candidates(a, b, atom_bin, offsets, nb, pbc, strides, table, far,
                                       cell_t, cutoff, centre, empty)
    rows = keep.view(-1).nonzero().squeeze(1)
    k, m = cand.shape[1], cand.shape[2]
    return (a + torch.div(rows, k * m, rounding_mode="floor"), cand.view(-1)[rows],
            image.view(-1, 3)[torch.div(rows, m, rounding_mode="floor")])


def _candidates(a: int, b: int, atom_bin, offsets, nb, pbc, strides, table, far, cell_t,
                cutoff, centre, empty) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(candidate atoms (n, K, M), bin images (n, K, 3), squared distances (n, K, M) Å^2,
    within the cutoff (n, K, M)) of atoms a <= i < b: the K bins around each, M slots each."""
    target = atom_bin[a:b, None, :] + offsets  # (n, K, 3) bins to visit
    image = torch.div(target, nb, rounding_mode="floor")
    if pbc.all():
        target = target - image * nb
    else:  # non-periodic axes do not wrap: a bin beyond the edge is the empty one
        image = image * to_device(pbc, target.device)
        target = target - image * nb
    flat = (target * strides).sum(-1)  # (n, K)
    if not pbc.all():
        outside = ((target < 0) | (target >= nb)).any(-1)
        flat = torch.where(outside, torch.full_like(flat, empty), flat)
    cand = table[flat]  # (n, K, M) atom indices, the sentinel in empty slots
    shift = _rows_times(image.double(), cell_t)  # (n, K, 3)
    d2 = (far[cand] - far[a:b, None, None, :] + shift[:, :, None, :]).square().sum(-1)
    keep = d2 < cutoff * cutoff
    # an atom meets itself only in its own bin with no image: the centre offset
    own = torch.arange(a, b, device=cand.device)[:, None]
    keep[:, centre, :] &= cand[:, centre, :] != own
    return cand, image, d2, keep


def _select(keep: Tensor, *tensors: Tensor) -> Tuple[Tensor, ...]:
    """The rows of ``tensors`` where ``keep`` (E,) is true: one ``nonzero`` (one host
    synchronisation on CUDA) for all of them, where each boolean index would make its own."""
    rows = keep.nonzero().squeeze(1)
    return tuple(t.index_select(0, rows) for t in tensors)


class NeighbourCache:
    """A Verlet list: edges within ``cutoff + skin``, rebuilt only when an atom moved more
    than ``skin / 2`` (Å) since the build, or the cell, pbc or number of atoms changed.

    ``filter_edges=True`` (default): every call re-filters the list by ``cutoff``, so the
    edges returned are exactly those of a fresh build (a pair within ``cutoff`` now was
    within ``cutoff + skin`` at the build). ``filter_edges=False``: the whole list is
    returned, also the edges between ``cutoff`` and ``cutoff + skin``, whose messages every
    geoff model's envelope makes exactly zero (``tests/test_skin_edges.py``): the model does
    more edges ((1 + skin/cutoff)^3, 1.33x at 0.5 / 5 Å) but the list's shape stays fixed
    between builds and no filtering pass (a ``nonzero`` and three gathers) runs per call.

    Call it as ``cache(positions, cell, pbc, cutoff) -> (i, j, shifts, shortest[, pairs])``,
    tensors on the positions' device and ``shortest = (distance Å, i, j)`` of the shortest
    edge within ``cutoff`` (``(inf, -1, -1)`` if none), which spares ``atoms_to_graph``'s
    overlap check its own pass; with ``filter_edges=False`` also ``pairs``, a function giving
    ``geoff.graph.edge_pairs`` of the list, computed once per build.
    ``atoms_to_graph(..., neighbour_list=cache)`` takes both. ``builds`` counts the
    searches; ``build_shortest`` is the shortest edge within the cutoff at the last build.

    On a GPU a reused list costs one host synchronisation per call: the moved-too-far flag and
    the shortest edge come back together (with the filter: by an asynchronous copy that its
    ``nonzero`` waits for anyway). A rebuild costs a second pass.
    """

    def __init__(self, skin: float = 1.0, filter_edges: bool = True):
        if not skin >= 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.skin = float(skin)
        self.filter_edges = bool(filter_edges)
        self.builds = 0
        self._key: Optional[tuple] = None
        self._reference: Optional[Tensor] = None
        self._reference_host: Optional[np.ndarray] = None
        self._pair_cache = None
        self.build_shortest = math.inf  # Å: the shortest edge within the cutoff at the build

    def _pairs(self):
        """``edge_pairs`` of the whole list, once per build (``filter_edges=False``)."""
        if self._pair_cache is None:
            from .graph import edge_pairs

            self._pair_cache = edge_pairs(torch.stack([self._i, self._j]), self._shifts)
        return self._pair_cache

    def _build(self, x: Tensor, cell: np.ndarray, pbc: np.ndarray, cutoff: float, key) -> None:
        # Images are 0 along non-periodic axes, whose rows are all the search cell changes,
        # so its shifts are the user's cell's; the cell is part of the key, so they hold
        # until the next build.
        i, j, shifts, _ = torch_neighbour_list(x, cell, pbc, cutoff + self.skin)
        self._i, self._j, self._shifts = i, j, shifts
        self._reference, self._key = x.clone(), key
        self._reference_host = None  # made by the first ``reuse_displacement`` after it
        self._pair_cache = None
        self.builds += 1

    def expire(self) -> None:
        """Forget the list: the next call builds a new one (for a caller that knows it is
        stale, e.g. from ``reuse_displacement``, without a pass on the device)."""
        self._key = None

    def reuse_displacement(self, positions: np.ndarray, cell, pbc, cutoff: float
                           ) -> Optional[float]:
        """The largest displacement (Å) of an atom since the build when the list built last
        still serves ``positions`` (N, 3) Å in ``cell`` and ``pbc`` at ``cutoff`` (same cell,
        pbc, cutoff and atom count, no atom moved more than ``skin / 2``), else None (also for
        non-finite positions). Decided on the host (numpy; microseconds at a few thousand
        atoms), so that a caller keeping its Graph between calls (``geoff.step_graph``) need
        not wait for the device to learn it."""
        if self._key is None:
            return None
        key = (np.asarray(cell, dtype=np.float64).tobytes(),
               np.asarray(pbc, dtype=bool).reshape(3).tobytes(), float(cutoff))
        positions = np.asarray(positions, dtype=np.float64)
        if key != self._key or positions.shape != tuple(self._reference.shape):
            return None
        if self._reference_host is None:  # once per build (one device-to-host copy)
            self._reference_host = self._reference.cpu().numpy()
        d = positions - self._reference_host
        moved2 = float(np.max(np.einsum("ij,ij->i", d, d))) if len(d) else 0.0
        return math.sqrt(moved2) if moved2 <= (0.5 * self.skin) ** 2 else None  # NaN: None

    def shortest_pending(self, x: Tensor) -> Tensor:
        """``[d^2 Å^2, i, j]`` (float64 (3,), on ``x``'s device, not read back) of the list's
        shortest edge at positions ``x`` (N, 3) float64; ``[inf, -1, -1]`` without edges.
        Over the whole list: beyond the cutoff only when no edge is within it, which no
        overlap threshold below the cutoff mistakes for an overlap."""
        if self._i.numel() == 0:
            return torch.tensor([math.inf, -1.0, -1.0], dtype=torch.float64, device=x.device)
        d2 = (x[self._j] - x[self._i] + self._shifts).square().sum(-1)
        k = torch.argmin(d2)
        return torch.stack([d2[k], self._i[k].double(), self._j[k].double()])

    def _edges(self, x: Tensor, cutoff: float, moved: Optional[Tensor]):
        """(i, j, shifts, shortest, stale): the list (filtered by ``cutoff`` unless
        ``filter_edges`` is off); ``stale``: whether ``moved`` (the largest squared
        displacement since the build, a device scalar) exceeds (skin / 2)^2."""
        d2 = (x[self._j] - x[self._i] + self._shifts).square().sum(-1)
        keep = d2 < cutoff * cutoff
        # what the host needs, in one small tensor: [moved, shortest d^2, its i, its j]
        kept_d2 = torch.where(keep, d2, torch.full_like(d2, math.inf))
        k = torch.argmin(kept_d2) if d2.numel() else None
        summary = torch.stack([
            moved if moved is not None else x.new_zeros(()),
            kept_d2[k] if k is not None else x.new_full((), math.inf),
            self._i[k].double() if k is not None else x.new_full((), -1.0),
            self._j[k].double() if k is not None else x.new_full((), -1.0)])
        read = _read_later(summary)  # lands while the filter's nonzero waits for the device
        edges = (self._i, self._j, self._shifts) if not self.filter_edges \
            else _select(keep, self._i, self._j, self._shifts)
        moved2, d2min, a, b = read()  # without the filter: the one synchronisation
        stale = moved is not None and moved2 > (0.5 * self.skin) ** 2
        shortest = (math.sqrt(d2min), int(a), int(b)) if math.isfinite(d2min) and a >= 0 \
            else (math.inf, -1, -1)
        return (*edges, shortest, stale)

    def __call__(self, positions, cell, pbc, cutoff: float):
        x = torch.as_tensor(positions).detach().to(torch.float64)
        cell = np.asarray(cell, dtype=np.float64)
        pbc = np.asarray(pbc, dtype=bool).reshape(3)
        key = (cell.tobytes(), pbc.tobytes(), float(cutoff))
        if key == self._key and self._reference is not None \
                and self._reference.shape == x.shape:
            moved = (x - self._reference).square().sum(-1).max()
            *edges, stale = self._edges(x, cutoff, moved)
            if not stale:
                return self._with_pairs(edges)
        self._build(x, cell, pbc, cutoff, key)
        edges = self._edges(x, cutoff, None)[:4]
        self.build_shortest = edges[3][0]
        return self._with_pairs(edges)

    def _with_pairs(self, edges) -> tuple:
        # a whole list keeps its pairs until the next build; a filtered one has new edges
        return (*edges, self._pairs) if not self.filter_edges else tuple(edges)

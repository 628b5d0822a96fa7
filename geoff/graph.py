"""The Graph: one input format for every consumer (ASE, training, LAMMPS).

A Graph is a ``Dict[str, Tensor]`` (TorchScript-friendly) with these keys:

=============  ===========  ==============================================================
key            shape/dtype  meaning
=============  ===========  ==============================================================
positions      (N, 3) f     Cartesian positions, Å
species        (N,) int64   index into the model's ``species`` list
edge_index     (2, E) int64 (receiver i, sender j); the edge vector is
                            ``r_ij = x_j - x_i + shift_ij``
shifts         (E, 3) f     Cartesian periodic-image offset of each edge, Å
cell           (B, 3, 3) f  cell vectors as rows, Å (zeros for a non-periodic structure)
pbc            (B, 3) bool  periodicity of each structure
batch          (N,) int64   structure index of each atom
n_local        (1,) int64   optional: atoms at index >= n_local are ghosts (LAMMPS) whose
                            energies are not summed
edge_pair      (E,) int64   optional (``add_edge_pairs``): the unordered pair {i, j, ±shift}
                            of each edge; an edge and its reverse share one
pair_first     (P,) int64   optional, with ``edge_pair``: one edge of each pair
=============  ===========  ==============================================================

With ``edge_pair``, models compute the factors that depend on |r_ij| only (radial bases
through their filter / radial MLPs) once per pair instead of once per edge: a full
neighbour list holds every pair twice, so that work halves. Results do not change (the
reverse edge's vector is the exact negative). Graphs without the keys (LAMMPS, padded CUDA
graph buffers) take the per-edge path.

Neighbour lists are built here, outside the model (matscipy); a model never builds its own.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .to_device import to_device

POSITIONS = "positions"
SPECIES = "species"
EDGE_INDEX = "edge_index"
SHIFTS = "shifts"
CELL = "cell"
PBC = "pbc"
BATCH = "batch"
N_LOCAL = "n_local"
EDGE_PAIR = "edge_pair"
PAIR_FIRST = "pair_first"

Graph = Dict[str, Tensor]

# Above this many neighbours per atom a neighbour list is almost certainly a unit mistake
# (a cutoff in bohr, nm, ...) and would exhaust memory.
MAX_NEIGHBOURS_PER_ATOM = 2000


def species_indices(symbols: Sequence[str], species: Sequence[str]) -> np.ndarray:
    """Map chemical symbols to indices into ``species``; unknown ones raise ``ValueError``."""
    lookup = {s: k for k, s in enumerate(species)}
    unknown = sorted({s for s in symbols if s not in lookup})
    if unknown:
        names = ", ".join(repr(s) for s in unknown)
        raise ValueError(
            f"species {names} not in model species {list(species)}; "
            "train or load a model that covers every element of the structure"
        )
    return np.fromiter((lookup[s] for s in symbols), dtype=np.int64, count=len(symbols))


def atoms_species(atoms, species: Sequence[str]) -> np.ndarray:
    """(N,) int64 indices into ``species`` of each atom of ``atoms``, looked up by atomic
    number in one vectorised step (the per-symbol Python loop cost ~35 ms at 131k atoms, a
    quarter of a GPU step). Unknown elements raise ``species_indices``' error naming them."""
    from ase.data import atomic_numbers, chemical_symbols

    table = np.full(len(chemical_symbols), -1, dtype=np.int64)
    for k, s in enumerate(species):
        if s not in atomic_numbers:  # a label that is not an element: the symbol path
            return species_indices(atoms.get_chemical_symbols(), species)
        table[atomic_numbers[s]] = k
    z = table[atoms.numbers]
    if (z < 0).any():
        return species_indices(atoms.get_chemical_symbols(), species)  # raises, naming them
    return z


class _Symbols:
    """``atoms``' chemical symbols by index, made only when an error message names one."""

    def __init__(self, numbers: np.ndarray):
        self.numbers = numbers

    def __getitem__(self, k: int) -> str:
        from ase.data import chemical_symbols

        return chemical_symbols[int(self.numbers[k])]

    def __len__(self) -> int:
        return len(self.numbers)


def _neighbour_cell(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """A non-singular cell for the neighbour search.

    Periodic vectors are kept; non-periodic ones are replaced by orthogonal vectors that span
    the structure, so molecules and slabs need no cell from the user.
    """
    cell = np.array(cell, dtype=np.float64)
    if pbc.any():
        periodic = cell[pbc]
        rank = np.linalg.matrix_rank(periodic, tol=1e-8) if len(periodic) else 0
        volume_ok = rank == len(periodic)
        if not volume_ok:
            raise ValueError(
                f"the periodic cell vectors {periodic.tolist()} are linearly dependent "
                "(singular cell with pbc); give the structure a proper cell or set pbc=False"
            )
    if np.all(pbc):
        return cell
    out = cell.copy()
    periodic = [cell[k] for k in range(3) if pbc[k]]
    # Orthonormal basis of the complement of the periodic vectors.
    if periodic:
        q, _ = np.linalg.qr(np.array(periodic).T, mode="complete")
        complement = q[:, len(periodic):].T
    else:
        complement = np.eye(3)
    for k, vec in zip([k for k in range(3) if not pbc[k]], complement):
        # The extent across this direction only: along a periodic one atoms may lie millions
        # of cells apart (a re-wrap through a near-singular cell), which is no vacuum to span.
        extent = np.ptp(positions @ vec) if len(positions) else 0.0
        out[k] = vec * (extent + 2.0 * cutoff + 1.0)
    return out


# Above this many periodic images of the cell within the cutoff of an atom, the cell is
# degenerate (a near-zero face spacing even after reduction): the search would not finish.
MAX_IMAGES_PER_ATOM = 100_000


def _search_cell(nl_cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """The same lattice with a Minkowski-reduced basis of its periodic vectors.

    Edges and Cartesian shifts do not depend on the basis, but the search's cost does: a
    strongly skewed cell needs ~cutoff/face-spacing images per direction, its reduced basis
    few. A lattice that stays degenerate after reduction raises ``ValueError``.
    """
    from ase.geometry import minkowski_reduce

    out = nl_cell
    vecs = nl_cell[pbc] / np.linalg.norm(nl_cell[pbc], axis=1, keepdims=True).clip(1e-300)
    cosines = np.abs(vecs @ vecs.T - np.eye(len(vecs)))
    # Angles within 60-120 degrees: reduced enough already (skip the ~0.4 ms reduction).
    if pbc.any() and cosines.max(initial=0.0) > 0.5:
        reduced = np.asarray(minkowski_reduce(nl_cell, pbc=pbc)[0], dtype=np.float64)
        if reduced.shape == (3, 3) and np.allclose(reduced[~pbc], nl_cell[~pbc]):
            out = reduced
    volume = abs(np.linalg.det(out))
    images = 1.0
    for k in np.nonzero(pbc)[0]:
        face = np.linalg.norm(np.cross(out[(k + 1) % 3], out[(k + 2) % 3]))
        spacing = volume / face if face > 0 else 0.0
        images *= 2.0 * np.ceil(cutoff / spacing) + 1.0 if spacing > 0 else np.inf
    if images > MAX_IMAGES_PER_ATOM:
        raise ValueError(
            f"the periodic cell {nl_cell[pbc].tolist()} is degenerate: an atom would see "
            f"{images:.3g} periodic images within the {cutoff:g} Å cutoff; give the structure "
            "a proper cell (check units and lattice vectors) or set pbc=False")
    return out


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """Edges within ``cutoff`` (Å) of every atom, including periodic images of itself.

    Returns ``(i, j, shifts)`` with ``r_ij = x_j - x_i + shifts`` (shifts in Å).
    Works for any pbc combination, triclinic cells and cells smaller than the cutoff.
    Non-finite positions or cells and degenerate periodic cells raise ``ValueError``.
    """
    from matscipy.neighbours import neighbour_list as _matscipy_nl

    from .structure_checks import check_numbers

    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be a positive number of Å, got {cutoff}")
    positions = np.asarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if len(positions) == 0:
        raise ValueError("the structure has no atoms; a graph needs at least one atom")
    check_numbers(positions, cell)
    nl_cell = _neighbour_cell(positions, cell, pbc, cutoff)
    if pbc.any():
        volume = abs(np.linalg.det(nl_cell))
        density = len(positions) / volume if np.all(pbc) else None
        if density is not None:
            expected = density * 4.0 / 3.0 * np.pi * cutoff**3
            if expected > MAX_NEIGHBOURS_PER_ATOM:
                raise ValueError(
                    f"cutoff {cutoff} Å gives about {expected:.0f} neighbours per atom "
                    f"(limit {MAX_NEIGHBOURS_PER_ATOM}); is the cutoff in Å and the cell right?"
                )
    search = _search_cell(nl_cell, pbc, cutoff)
    i, j, S = _matscipy_nl("ijS", positions=positions, cell=search, pbc=pbc, cutoff=float(cutoff))
    shifts = S.astype(np.float64) @ search
    return i.astype(np.int64), j.astype(np.int64), shifts


def _model_dtype_device(model):
    """The dtype and device of ``model``'s first floating-point tensor (float64/cpu if none)."""
    tensors = list(model.parameters()) + list(model.buffers()) \
        if isinstance(model, torch.nn.Module) else []
    for t in tensors:
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.float64, torch.device("cpu")


def atoms_to_graph(
    atoms,
    model=None,
    *,
    species: Optional[Sequence[str]] = None,
    cutoff: Optional[float] = None,
    dtype: Optional[torch.dtype] = None,
    device: Optional[torch.device | str] = None,
    min_distance: Optional[float] = None,
    neighbour_list="auto",
    edge_pairs: bool = False,
) -> Graph:
    """Build the Graph of one ``ase.Atoms`` (neighbours within ``model.cutoff``).

    Give either ``model`` (anything with ``species`` and ``cutoff``) or both ``species`` and
    ``cutoff``. ``dtype`` and ``device`` default to the model's (float64 and cpu without one),
    so ``model(atoms_to_graph(atoms, model))`` works as is.

    ``min_distance`` (Å): two atoms (or an atom and its periodic image) closer than this raise
    ``geoff.structure_checks.OverlapError`` (a ``ValueError``) naming them. Default: the
    model's overlap threshold (``structure_checks.overlap_threshold``); 0 turns the check off.

    ``neighbour_list``: ``"matscipy"`` (CPU), ``"torch"`` (a cell list on ``device``,
    ``geoff.neighbours``), ``"auto"`` (torch on CUDA, else matscipy) or a callable
    ``(positions, cell, pbc, cutoff) -> (i, j, shifts)`` such as a ``NeighbourCache``; it
    may add a fourth item, the shortest edge ``(distance Å, i, j)`` (``inf, -1, -1`` if
    none), which the overlap check then takes instead of measuring the edges again, and a
    fifth, a function giving ``edge_pairs`` of its edges (a list kept whole between builds
    computes them once per build).

    ``edge_pairs``: also the keys ``edge_pair`` and ``pair_first`` (``add_edge_pairs``).
    """
    from .structure_checks import check_edge_lengths, check_overlaps, overlap_threshold

    if model is not None:
        species = list(model.species)
        cutoff = float(model.cutoff)
        if dtype is None or device is None:  # (walking the parameters costs ~1 ms a call)
            model_dtype, model_device = _model_dtype_device(model)
            dtype = model_dtype if dtype is None else dtype
            device = model_device if device is None else device
    dtype = torch.float64 if dtype is None else dtype
    device = "cpu" if device is None else device
    if species is None or cutoff is None:
        raise ValueError("atoms_to_graph needs a model, or both species= and cutoff=")
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms; a graph needs at least one atom")
    if min_distance is None:
        min_distance = overlap_threshold(model)
    z = atoms_species(atoms, species)
    symbols = _Symbols(atoms.numbers)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    method = _list_method(neighbour_list, device)
    positions = atoms.positions  # (N, 3) Å; a device list's: on its device once, in float64
    if method != "matscipy":
        positions = to_device(positions, device, torch.float64)
    i, j, shifts, *extra = _edges(positions, cell, pbc, cutoff, method)
    shortest, pairs = (extra + [None, None])[:2]  # what the list measured already, if any
    if min_distance > cutoff:  # the graph's edges do not reach that far
        check_overlaps(atoms.positions, cell, pbc, min_distance, symbols)
    else:
        check_edge_lengths(positions, i, j, shifts, min_distance, symbols, shortest=shortest)
    graph = {
        POSITIONS: to_device(positions, device, dtype),
        SPECIES: to_device(z, device),
        EDGE_INDEX: torch.stack([to_device(i, device), to_device(j, device)]),
        SHIFTS: to_device(shifts, device, dtype),
        CELL: to_device(cell, device, dtype).unsqueeze(0),
        PBC: to_device(pbc, device).unsqueeze(0),
        BATCH: torch.zeros(len(atoms), dtype=torch.long, device=device),
    }
    if edge_pairs and pairs is not None:  # the list's own, computed once per build
        graph[EDGE_PAIR], graph[PAIR_FIRST] = pairs()
    elif edge_pairs:
        graph = add_edge_pairs(graph)
    return graph


def edge_pairs(edge_index: Tensor, shifts: Tensor):
    """``(edge_pair (E,), pair_first (P,))``: edges grouped into unordered pairs.

    Edge ``i <- j`` with shift ``s`` and edge ``j <- i`` with shift ``-s`` are one pair (the
    same distance); an edge without its reverse in the list is a pair of its own. Shifts are
    compared at 0.01 Å (distinct periodic images differ by a lattice vector). Two 1-D sorts
    of int64 keys on the edges' device (``torch.unique``).
    """
    i, j = edge_index[0], edge_index[1]
    n_edges = int(i.shape[0])
    device = i.device
    if n_edges == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    q = torch.round(shifts.detach().to(torch.float64) * 100.0).to(torch.long)  # (E, 3)
    # canonical orientation: i < j, or i == j (a periodic self-image) with s > 0 (lexically)
    sign = torch.sign(q)
    first_nonzero = torch.argmax((sign != 0).to(torch.int8), dim=1, keepdim=True)
    negative = sign.gather(1, first_nonzero).squeeze(1) < 0
    flip = (i > j) | ((i == j) & negative)
    a, b = torch.where(flip, j, i), torch.where(flip, i, j)
    q = torch.where(flip.unsqueeze(1), -q, q)
    edge_pair = _key_pairs(a, b, q)
    if edge_pair is None:  # keys too wide for one int64: unique rows (slow)
        keys = torch.stack([a, b, q[:, 0], q[:, 1], q[:, 2]], dim=1)  # (E, 5)
        edge_pair = torch.unique(keys, dim=0, return_inverse=True)[1]
    n_pairs = int(edge_pair.max()) + 1
    order = torch.arange(n_edges, device=device)
    pair_first = torch.full((n_pairs,), n_edges, dtype=torch.long, device=device)
    pair_first = pair_first.scatter_reduce(0, edge_pair, order, reduce="amin")
    return edge_pair, pair_first


def _key_pairs(a: Tensor, b: Tensor, q: Tensor) -> Optional[Tensor]:
    """``edge_pair`` from one int64 key per edge (atoms a <= b, shift code), or None when the
    key would not fit in 62 bits."""
    span = int(q.abs().max())
    base = 2 * span + 1
    if base ** 3 >= 2 ** 62:
        return None
    shift_key = ((q[:, 0] + span) * base + (q[:, 1] + span)) * base + (q[:, 2] + span)
    codes, shift_code = torch.unique(shift_key, return_inverse=True)
    n_atoms, n_codes = int(b.max()) + 1, int(codes.shape[0])  # b >= a
    if n_atoms * n_atoms * n_codes >= 2 ** 62:
        return None
    return torch.unique((a * n_atoms + b) * n_codes + shift_code, return_inverse=True)[1]


def add_edge_pairs(graph: Graph) -> Graph:
    """``graph`` with ``edge_pair`` and ``pair_first`` (see the module docstring)."""
    out = dict(graph)
    out[EDGE_PAIR], out[PAIR_FIRST] = edge_pairs(graph[EDGE_INDEX], graph[SHIFTS])
    return out


def _list_method(method, device):
    """``neighbour_list`` of ``atoms_to_graph`` resolved: "matscipy", "torch" or a callable."""
    if method == "auto":
        return "torch" if torch.device(device).type == "cuda" else "matscipy"
    if method in ("matscipy", "torch") or callable(method):
        return method
    raise ValueError(f"neighbour_list must be 'auto', 'matscipy', 'torch' or a callable, "
                     f"got {method!r}")


def _edges(positions, cell, pbc, cutoff, method):
    """(i, j, shifts[, shortest[, pairs]]) by a resolved ``method``; ``positions`` a float64
    tensor on the list's device for "torch" and callables, an array for "matscipy"."""
    if method == "matscipy":
        return neighbour_list(positions, cell, pbc, cutoff)
    if method == "torch":
        from .neighbours import torch_neighbour_list

        return torch_neighbour_list(positions, cell, pbc, cutoff)[:3]
    return method(positions, cell, pbc, cutoff)


def batch_graphs(graphs: List[Graph]) -> Graph:
    """Concatenate graphs into one batch: atom indices offset, ``batch`` renumbered.

    Keys other than the structural ones (targets such as ``energy``, ``forces``) are
    concatenated along their first dimension.
    """
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    out: Graph = {}
    offsets = np.cumsum([0] + [int(g[POSITIONS].shape[0]) for g in graphs[:-1]])
    out[EDGE_INDEX] = torch.cat([g[EDGE_INDEX] + int(o) for g, o in zip(graphs, offsets)], dim=1)
    paired = [EDGE_PAIR in g for g in graphs]
    if any(paired):
        if not all(paired):
            raise ValueError("batch_graphs: some graphs have edge pairs and some do not; "
                             "build all with edge_pairs=True (or none)")
        edge_offsets = np.cumsum([0] + [int(g[EDGE_INDEX].shape[1]) for g in graphs[:-1]])
        pair_offsets = np.cumsum([0] + [int(g[PAIR_FIRST].shape[0]) for g in graphs[:-1]])
        out[EDGE_PAIR] = torch.cat([g[EDGE_PAIR] + int(o) for g, o in zip(graphs, pair_offsets)])
        out[PAIR_FIRST] = torch.cat([g[PAIR_FIRST] + int(o)
                                     for g, o in zip(graphs, edge_offsets)])
    out[BATCH] = torch.cat(
        [torch.full_like(g[BATCH], k) for k, g in enumerate(graphs)]
    )
    for key in graphs[0]:
        if key in (EDGE_INDEX, BATCH, N_LOCAL, EDGE_PAIR, PAIR_FIRST):
            continue
        out[key] = torch.cat([g[key] for g in graphs], dim=0)
    return out

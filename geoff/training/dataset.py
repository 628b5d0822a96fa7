"""Training data: labelled extxyz frames -> cached graphs, splits, and a batch loader.

Each structure becomes one Graph (see ``geoff.graph``) whose neighbour list is built once, when
the dataset is made, and kept in memory. Labels ride in the same dictionary, so batching them
is ``geoff.graph.batch_graphs``:

===============  ==========  ============================================================
key              shape       meaning
===============  ==========  ============================================================
energy           (B,)        total energy, eV (0 where absent)
forces           (N, 3)      forces, eV/Å (0 where absent)
stress           (B, 3, 3)   full stress tensor, eV/Å³, ASE sign (0 where absent)
energies         (N,)        per-atom energies, eV (0 where absent)
target           (N,)        the per-atom property named by ``target`` (0 where absent)
<label>_mask     (B,)        1 where the structure has that label, else 0 (``target_mask``:
                             (N,), per atom: 0 for atoms whose value is NaN or missing)
n_atoms          (B,)        atoms per structure (float, for per-atom energies)
===============  ==========  ============================================================

Stress labels count only for 3D-periodic cells (a stress needs a volume).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.io import reference
from ..graph import Graph, atoms_to_graph, batch_graphs

LABELS = ("energy", "forces", "stress", "energies", "target")
N_ATOMS = "n_atoms"
SPLITS = ("train", "val", "test")


def mask_key(label: str) -> str:
    return f"{label}_mask"


def _full_stress(stress) -> np.ndarray:
    s = np.asarray(stress, dtype=np.float64).reshape(-1)
    if s.size == 9:
        return s.reshape(3, 3)
    if s.size == 6:  # Voigt xx yy zz yz xz xy
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"a stress label must have 6 (Voigt) or 9 components, got {s.size}")


def frame_to_sample(atoms, species: Sequence[str], cutoff: float,
                    target: Optional[str] = None) -> Graph:
    """One labelled structure -> its Graph (float64) with labels and masks.

    ``target``: a per-atom array of the frame (``atoms.arrays``) learned by a property head;
    NaN marks atoms without a value. Frames without the array have no labelled atom.
    """
    g = atoms_to_graph(atoms, species=species, cutoff=cutoff, dtype=torch.float64)
    ref = reference(atoms)
    n = len(atoms)
    f64 = torch.float64

    def put(label, value, shape):
        present = value is not None
        g[label] = (torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(shape)
                    if present else torch.zeros(shape, dtype=f64))
        g[mask_key(label)] = torch.tensor([1.0 if present else 0.0], dtype=f64)

    energy = ref.get("energy")
    put("energy", None if energy is None else float(energy), (1,))
    put("forces", ref.get("forces"), (n, 3))
    stress = ref.get("stress")
    if stress is not None and not np.all(atoms.pbc):
        stress = None  # no volume, no stress
    put("stress", None if stress is None else _full_stress(stress), (1, 3, 3))
    put("energies", ref.get("energies"), (n,))
    if target:
        values = atoms.arrays.get(target)
        values = np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)
        g["target"] = torch.as_tensor(np.nan_to_num(values, nan=0.0)).reshape(n)
        g[mask_key("target")] = torch.as_tensor(np.isfinite(values).astype(np.float64)).reshape(n)
    g[N_ATOMS] = torch.tensor([float(n)], dtype=f64)
    return g


class GraphDataset:
    """Labelled graphs held in memory, with per-structure metadata for the loader.

    ``dataset[k]`` is the Graph of structure ``k``; ``converted(dtype, device)`` gives a copy in
    the training precision and on the training device, made once (not per batch).
    """

    def __init__(self, samples: List[Graph]):
        if not samples:
            raise ValueError("a dataset needs at least one structure")
        self.samples = samples
        self.n_atoms = np.array([int(g["positions"].shape[0]) for g in samples], dtype=np.int64)
        self.has = {lab: np.array([mask_key(lab) in g and bool(g[mask_key(lab)].max() > 0)
                                   for g in samples]) for lab in LABELS}
        # labelled atoms of the per-atom target, per structure
        self.n_target = np.array([int(g[mask_key("target")].sum()) if "target" in g else 0
                                  for g in samples])
        self.n_edges = np.array([int(g["edge_index"].shape[1]) for g in samples], dtype=np.int64)

    @classmethod
    def from_frames(cls, frames, species: Sequence[str], cutoff: float,
                    progress: bool = False, target: Optional[str] = None) -> "GraphDataset":
        iterator = frames
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(frames, desc="neighbour lists", unit="struct", leave=False)
        return cls([frame_to_sample(a, species, cutoff, target) for a in iterator])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k: int) -> Graph:
        return self.samples[k]

    def converted(self, dtype: torch.dtype, device="cpu") -> "GraphDataset":
        """Floating tensors cast to ``dtype``, all moved to ``device`` (shared when unchanged)."""
        out = []
        for g in self.samples:
            out.append({k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                        for k, v in g.items()})
        new = GraphDataset.__new__(GraphDataset)
        new.samples, new.n_atoms, new.has, new.n_edges = out, self.n_atoms, self.has, self.n_edges
        new.n_target = self.n_target
        return new

    def label_counts(self, indices: Optional[Sequence[int]] = None) -> Dict[str, int]:
        """Rows that carry each label: structures for energy/stress, atoms for forces/energies."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        n = self.n_atoms[idx]
        return {
            "energy": int(self.has["energy"][idx].sum()),
            "forces": int((n * self.has["forces"][idx]).sum()),
            "stress": int(self.has["stress"][idx].sum()),
            "energies": int((n * self.has["energies"][idx]).sum()),
            "target": int(self.n_target[idx].sum()),
        }


def collate(dataset: GraphDataset, indices: Sequence[int]) -> Graph:
    return batch_graphs([dataset.samples[int(k)] for k in indices])


class GraphLoader:
    """Batches of structures, shuffled per epoch by a seeded generator.

    The order of epoch ``e`` is a pure function of ``(seed, e)``, so a run resumed at
    ``(epoch, batch)`` sees exactly the batches the uninterrupted run would have seen.

    With ``world_size > 1`` (DistributedDataParallel), every global batch of ``batch_size``
    structures is dealt round-robin to the ranks; each rank gets its shard plus the label
    counts of the *global* batch, so that per-rank loss sums divided by global counts add up to
    the single-process loss. A trailing global batch with fewer structures than ranks is
    dropped (a rank without data would stall the gradient all-reduce).

    Iterating yields ``(graph, counts)``; ``counts`` are the global label counts.
    """

    def __init__(self, dataset: GraphDataset, indices: Sequence[int], batch_size: int,
                 shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        n = len(self.indices)
        self._n_batches = math.ceil(n / self.batch_size)
        if world_size > 1 and n % self.batch_size and n % self.batch_size < world_size:
            self._n_batches -= 1
        if self._n_batches < 1 and n > 0:
            raise ValueError(f"{n} structures cannot fill one batch for {world_size} ranks; "
                             "use more data or fewer processes")

    def __len__(self) -> int:
        return self._n_batches

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))
        return self.indices[torch.randperm(len(self.indices), generator=gen).numpy()]

    def global_batches(self, epoch: int = 0) -> List[np.ndarray]:
        order = self.order(epoch)
        return [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Tuple[Graph, Dict[str, int]]]:
        """Local batches of ``epoch`` from batch number ``start`` on (for resuming)."""
        for glob in self.global_batches(epoch)[start:]:
            local = glob[self.rank::self.world_size]
            yield collate(self.dataset, local), self.dataset.label_counts(glob)

    def __iter__(self):
        return self.batches(0)


# ---------------------------------------------------------------------------------------------
# splits

def make_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> Dict[str, np.ndarray]:
    """Random train/val/test indices of ``n`` structures (each sorted), reproducible by seed."""
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    n_val = int(round(val_fraction * n))
    n_test = int(round(test_fraction * n))
    if val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} structures leave none for training with val_fraction="
                         f"{val_fraction}, test_fraction={test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    return {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test:n_test + n_val]),
            "train": np.sort(perm[n_test + n_val:])}


def split_path(out_dir, name: str) -> Path:
    return Path(out_dir) / f"split_{name}.txt"


def write_split(out_dir, split: Dict[str, np.ndarray], sources: Dict[str, str]) -> List[Path]:
    """``split_{train,val,test}.txt``: one frame index per line into the named data file."""
    from ..checkpoint import atomic_write

    paths = []
    for name in SPLITS:
        idx = split.get(name, np.zeros(0, dtype=np.int64))
        path = split_path(out_dir, name)
        header = f"# geoff split '{name}': {len(idx)} frame indices (0-based) into {sources[name]}\n"
        text = header + "".join(f"{int(k)}\n" for k in idx)

        def write(tmp, text=text):
            Path(tmp).write_text(text)

        atomic_write(path, write)
        paths.append(path)
    return paths


def read_split(out_dir) -> Dict[str, np.ndarray]:
    """The split written by ``write_split`` (missing files -> empty)."""
    out = {}
    for name in SPLITS:
        path = split_path(out_dir, name)
        if not path.exists():
            raise FileNotFoundError(f"no split file {path}")
        rows = [line.strip() for line in path.read_text().splitlines()]
        out[name] = np.array([int(r) for r in rows if r and not r.startswith("#")], dtype=np.int64)
    return out

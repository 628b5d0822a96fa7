"""The data of one run: files read, species chosen, the split drawn (or read), graphs built.

The training and validation graphs are built at start-up (float64 masters; the trainer casts
them once to its precision and device); the test graphs only when the test metrics are due.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..data.io import read_dataset
from .dataset import GraphDataset, make_split, read_split


def symbols_sorted(frames) -> List[str]:
    """The elements present in ``frames``, by atomic number."""
    from ase.data import atomic_numbers

    symbols = set()
    for atoms in frames:
        symbols.update(atoms.get_chemical_symbols())
    return sorted(symbols, key=lambda s: atomic_numbers[s])


def _split(cfg: Dict[str, Any], frames, extra) -> tuple:
    """(split indices, source file of each split), checked against the files' lengths."""
    if cfg["splits_from"]:
        split = read_split(cfg["splits_from"])
    else:
        split = make_split(len(frames), 0.0 if extra["val"] else cfg["val_fraction"],
                           0.0 if extra["test"] else cfg["test_fraction"], cfg["seed"])
    sources = {"train": str(cfg["data"])}
    for name in ("val", "test"):
        if extra[name] is not None:
            split[name] = np.arange(len(extra[name]))
            sources[name] = str(cfg[f"{name}_data"])
        else:
            sources[name] = str(cfg["data"])
    for name, idx in split.items():
        n = len(extra[name]) if name != "train" and extra[name] is not None else len(frames)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"split '{name}' has indices outside the {n} structures of "
                             f"{sources[name]}; the split files belong to other data")
    if len(split["train"]) == 0:
        raise ValueError("the training split is empty")
    return split, sources


class RunData:
    """``RunData(cfg, progress)``: ``species``, ``split``, ``sources``, ``train``, ``val``.

    ``train``/``val`` are float64 GraphDatasets (``val`` None without a validation split);
    ``test()`` builds the test set's; ``seconds`` is the time reading and building took.
    """

    def __init__(self, cfg: Dict[str, Any], progress: bool = False):
        t0 = time.time()
        self.cfg, self.progress = cfg, progress
        self.frames = read_dataset(cfg["data"])
        self.extra = {name: read_dataset(cfg[f"{name}_data"]) if cfg[f"{name}_data"] else None
                      for name in ("val", "test")}
        every = self.frames + [a for f in self.extra.values() if f for a in f]
        self.species = list(cfg["species"] or symbols_sorted(every))
        self.split, self.sources = _split(cfg, self.frames, self.extra)
        self.train = self._build("train")
        self.val = self._build("val")
        self.seconds = time.time() - t0

    def _build(self, name: str) -> Optional[GraphDataset]:
        src = self.extra.get(name) if name != "train" else None
        src = src if src is not None else self.frames
        chosen = [src[int(k)] for k in self.split[name]]
        if not chosen:
            return None
        return GraphDataset.from_frames(chosen, self.species, self.cfg["cutoff"],
                                        progress=self.progress and len(chosen) > 200,
                                        target=self.cfg.get("target"))

    def test(self) -> Optional[GraphDataset]:
        """The test set's graphs (neighbour lists built now; None without a test split)."""
        return self._build("test")

"""SymGNN-style symmetrisation: an unconstrained network averaged over sampled O(3) transforms.

    E(x) = head( (1/K) sum_k h(R_k x) ),   vectors = (1/K) sum_k R_k^T v(R_k x)

with ``h`` the same unconstrained MLP message-passing network as FAENet (``faenet.FrameMPNN``,
fed the edge vectors ``R_k r_ij``, i.e. frames ``F_k = R_k^T`` with no gates) and R_k
Haar-random orthogonal matrices (``group="O3"``: rotations and reflections; ``"SO3"``:
rotations). Nothing here is exact: the average over K random transforms is a Monte Carlo
estimate of the average over the whole group, with an invariance error that falls like
1/sqrt(K) (measured in ``tests/test_frames.py`` and ``benchmarks/symmetry.py``).

* Training mode: K = ``n_samples`` fresh transforms per call (torch's global RNG, so
  ``torch.manual_seed`` makes a run reproducible), a data augmentation that is also an
  unbiased estimate of the group average of the features.
* Eval mode (calculator, export, MD): a fixed set of K transforms, drawn once from a
  generator seeded with ``seed`` and stored as a buffer (saved with checkpoints and exported
  models). The energy is then one smooth deterministic function of the positions: two calls
  agree exactly, forces are its exact gradient (energy is conserved in MD), and it is local
  (the same K transforms for every atom), so extensivity and LAMMPS ghosts work. It is only
  approximately invariant: rotating the structure changes the energy by ~ sigma sqrt(2/K),
  sigma the spread of the energy over single transforms.

Departures from a SymGNN-style paper setup: the average is over the final per-atom features
(the shared ``EnergyModel`` owns the energy head), and the fixed evaluation set is a buffer
so that exported models are deterministic.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

from .faenet import FrameAveraged, FrameMPNN
from .frames import GROUPS, random_orthogonal


class SymGNN(FrameAveraged):
    """Unconstrained network averaged over ``n_samples`` sampled orthogonal transforms.

    Args:
        n_species, cutoff (Å), n_features, n_layers, n_rbf: as for every geoff model.
        n_samples: K, transforms per call (training) and in the fixed evaluation set.
        group: ``"O3"`` or ``"SO3"``.
        seed: seed of the evaluation set.
        n_vectors: vector channels for the direct force head.

    Pieces (``representation.py``): ``FrameMPNN``'s, with one frame per sampled transform:
    state ``{"h": (N, K, F)}`` exchanged between layers, plus the last layer's messages.
    Local (the same K transforms for every atom).
    """

    # A shared hyper-parameter name that does not apply here, and why (read by build_model).
    inapplicable_hparams = {"frames": "symgnn averages over sampled transforms (n_samples); "
                                      "PCA frames are faenet's"}

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 128,
                 n_layers: int = 3, n_rbf: int = 16, n_samples: int = 8, group: str = "O3",
                 seed: int = 0, n_vectors: int = 8, activation: str = "silu"):
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        super().__init__(n_scalars=n_features, n_vectors=n_vectors, n_layers=n_layers,
                         node_features=["h"])
        self.n_samples = n_samples
        self.group = group
        self.network = FrameMPNN(n_species, cutoff, n_features, n_layers, n_rbf, n_vectors,
                                 activation, average_each_layer=False)
        generator = torch.Generator().manual_seed(int(seed))
        transforms = random_orthogonal(n_samples, group, torch.get_default_dtype(),
                                       torch.device("cpu"), generator)
        self.register_buffer("transforms", transforms)  # (K, 3, 3): the frames F_k = R_k^T

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        if self.training:
            transforms = random_orthogonal(self.n_samples, self.group, edge_vec.dtype,
                                           edge_vec.device)  # (K, 3, 3), fresh every call
        else:
            transforms = self.transforms.to(edge_vec.dtype)  # (K, 3, 3), fixed
        n_edges = edge_vec.shape[0]
        frames = transforms.unsqueeze(0).expand(n_edges, self.n_samples, 3, 3)  # (E, K, 3, 3)
        gates = torch.ones((n_edges, 3), dtype=edge_vec.dtype, device=edge_vec.device)  # (E, 3)
        return self.network.embed(graph["species"], graph["edge_index"], edge_vec, frames,
                                  gates)

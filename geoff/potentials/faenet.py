"""FAENet-style frame averaging (Duval et al., 2023) of an unconstrained message-passing network.

The network (``FrameMPNN``, shared with ``symgnn.py``) is a plain MLP message-passing network
that sees *raw relative vectors*, not only distances: the message from j to i is

    m_k,ij = MLP([h_i, h_j, rbf(r_ij), g_ij * (F_k,ij^T r_ij) / cutoff]) * W rbf(r_ij) u(r_ij)

for each frame ``F_k,ij`` (3x3, columns the axes; see ``frames.py``), ``g_ij`` the per-axis
degeneracy gates (ones for sampled transforms) and ``u`` the smooth ``PolynomialCutoff``
envelope; ``W rbf`` is a linear radial filter (SchNet's continuous filter, as in FAENet).
Without the filter, distance entered only additively beside h_i and h_j, and on a dense metal
(Cu64Zr36 at 7.6 Å, ~110 neighbours) the network stayed at zero forces (see ``egnn.py``).
On its own the network is not invariant; averaging over a set of frames that is mapped to
itself by the symmetry makes it so. Vectors (for the direct force head) are predicted *in the
frame* and rotated back, ``F_k v'_k``, before the average, so they rotate with the structure.

``frames`` (the ``FAENet`` hyper-parameter):

* ``"local"`` (default): one PCA frame per atom from the cutoff-weighted covariance of its
  neighbour vectors. The message into atom i is averaged over the 8 (O3) or 4 (SO3) sign
  choices of *i's* frame in every layer, an exact average over a finite set, so every
  layer's features are invariant. The model is local with the same receptive field as any
  MPNN of ``n_layers`` layers: periodic systems, extensivity and LAMMPS ghost atoms work.
* ``"global"``: one PCA frame per structure from its centred positions (FAENet's frame);
  the whole network runs once per frame (8 for ``group="O3"``, 4 for ``"SO3"``) and the
  final per-atom features are averaged. Exact, but **not local**: the energy of a
  structure is not the sum of local contributions (no extensivity, no MPI domain
  decomposition), and the frame jumps where eigenvalues cross and where atoms wrap through a
  periodic boundary (the positions change, the crystal does not), so energies jump there
  too unless the gates are on.
* ``"stochastic"``: as ``"global"``, but in training mode only ``n_samples`` (default 1,
  FAENet's "SFA") frames drawn at random per structure per call, which is K times cheaper and
  only approximately invariant (each call equals the network in *one* of the K frames, so
  the invariance error is bounded by the spread of the per-frame energies; measured in
  ``tests/test_frames.py``). In eval mode (``model.eval()``, the calculator, export) it
  averages over **all** frames, i.e. it is ``"global"`` exactly: deterministic,
  conservative and invariant.

Departures from the FAENet paper, and why:

* The frame average is taken over the final per-atom *features*, not the energies: the
  shared ``EnergyModel`` owns the energy head (``head(mean_k h_k)`` is as invariant as
  ``mean_k head(h_k)``). In stochastic training this is a Jensen gap between train
  (``head(h_k)``) and eval (``head(mean_k h_k)``) that shrinks as the features become
  nearly frame-independent.
* Per-atom local frames (the paper's frames are global) and the smooth cutoff-weighted
  covariance that defines them, for MD with periodic cells and LAMMPS.
* Degeneracy gates (``gap_scale``, see ``frames.py``): the frame coordinates of each edge
  vector are multiplied by a smooth gate that vanishes like gap^2 where eigenvalues
  coincide, which makes the energy C^1 through degeneracies and eigenvalue crossings and
  bounds the force amplification of near-degenerate frames. On a (nearly) perfect cubic
  crystal every local covariance is (nearly) isotropic, so the frame part is switched off
  there and the model sees distances only: a perfect-lattice FCC site gets exact invariance
  and zero forces instead of an arbitrary frame. ``gap_scale=0`` gives plain PCA frames.
* The network is a generic MLP MPNN with a radial filter and a smooth cutoff envelope, not
  FAENet's exact interaction and embedding blocks; forces come from autograd (conservative) or
  the shared direct head, not from FAENet's per-frame force decoder.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from .frames import GROUPS, neighbour_covariance, pca_frames, pick_frames, structure_covariance
from .layers import BesselBasis, PolynomialCutoff, activation, mlp, scatter_sum
from .representation import LayeredRepresentation

FRAME_MODES = ("local", "global", "stochastic")


class FrameMessageLayer(nn.Module):
    """One residual message-passing layer of the frame network.

    h (N, Kh, F) with Kh = 1 (features already invariant) or K (one copy per frame);
    frame coordinates of the edge vectors (E, K, 3). Messages (E, K, F) are an MLP of
    [h_i, h_j, rbf(r), frame coordinates] times the envelope; the first linear layer is split
    into per-node and per-edge parts so that nothing is concatenated per edge and frame.
    """

    def __init__(self, n_features: int, n_rbf: int, act: str):
        super().__init__()
        self.lin_receiver = nn.Linear(n_features, n_features)
        self.lin_sender = nn.Linear(n_features, n_features, bias=False)
        self.lin_rbf = nn.Linear(n_rbf, n_features, bias=False)
        self.lin_vec = nn.Linear(3, n_features, bias=False)
        self.radial_filter = nn.Linear(n_rbf, n_features, bias=False)
        self.act = activation(act)
        self.message = mlp([n_features, n_features, n_features], act=act)
        self.update = mlp([2 * n_features, n_features, n_features], act=act)

    def forward(self, h: Tensor, edge_index: Tensor, rbf: Tensor, coords: Tensor,
                envelope: Tensor, average_frames: bool) -> Tuple[Tensor, Tensor]:
        i, j = edge_index[0], edge_index[1]
        pre = (self.lin_receiver(h)[i] + self.lin_sender(h)[j]  # (E, Kh, F)
               + self.lin_rbf(rbf).unsqueeze(1)  # (E, 1, F)
               + self.lin_vec(coords))  # (E, K, F)
        radial = (self.radial_filter(rbf) * envelope.unsqueeze(-1)).unsqueeze(1)  # (E, 1, F)
        m = self.message(self.act(pre)) * radial  # (E, K, F)
        # Local frames: the K frames of an edge are the sign choices of its receiver's frame,
        # and different atoms' choices are independent, so the average must be taken here,
        # per edge, before messages of different frames meet in one atom.
        summed = m.mean(dim=1, keepdim=True) if average_frames else m  # (E, Kh, F)
        agg = scatter_sum(summed, i, h.shape[0])  # (N, Kh, F)
        return h + self.update(torch.cat([h, agg], dim=-1)), m  # (N, Kh, F), (E, K, F)


class FrameMPNN(nn.Module):
    """Unconstrained MLP message passing averaged over given frames (shared by FAENet, SymGNN).

    In the pieces of the representation contract (``representation.py``), called by the
    owning representation:

    * ``embed(species, edge_index, edge_vec, frames, gates)`` with ``frames`` (E, K, 3, 3)
      the K frames of each edge (columns = axes) and ``gates`` (E, 3) the per-axis gates of
      the frame coordinates -> state ``{"h": (N, Kh, F)}`` and the geometry;
    * ``layer(k, state, geometry)``: ``h`` updated, and ``m`` (E, K, F) the layer's
      per-frame messages (into each receiver; the readout reads the last layer's);
    * ``readout(state, geometry)`` -> scalars (N, F) and vectors (N, 3, C).

    ``average_each_layer``: True when the K frames of an edge are the sign choices of a
    per-atom frame (local; Kh = 1), False when frame k is the same for a whole structure
    (global PCA frames, sampled transforms; Kh = K): then the network runs K times in
    parallel and only the final features are averaged.
    """

    def __init__(self, n_species: int, cutoff: float, n_features: int, n_layers: int,
                 n_rbf: int, n_vectors: int, act: str, average_each_layer: bool):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.cutoff = float(cutoff)
        self.n_vectors = n_vectors
        self.average_each_layer = average_each_layer
        self.embedding = nn.Embedding(n_species, n_features)
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.envelope = PolynomialCutoff(cutoff)
        self.layers = nn.ModuleList([FrameMessageLayer(n_features, n_rbf, act)
                                     for _ in range(n_layers)])
        # No biases: the envelope already in the messages then makes vectors vanish at the
        # cutoff, and a frame-independent part cancels in the sign average anyway.
        self.vec_radial = nn.Linear(n_features, n_vectors, bias=False)
        self.vec_free = nn.Linear(n_features, 3 * n_vectors, bias=False)

    def embed(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, frames: Tensor,
              gates: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        r = torch.linalg.norm(edge_vec, dim=-1)  # (E,)
        # Edge vectors in every frame: p_k = F_k^T r.
        proj = torch.einsum("ekab,ea->ekb", frames, edge_vec)  # (E, K, 3)
        geometry = {"edge_index": edge_index, "frames": frames, "r": r, "proj": proj,
                    "rbf": self.rbf(r),  # (E, n_rbf)
                    "envelope": self.envelope(r),  # (E,)
                    "coords": proj * (gates.unsqueeze(1) / self.cutoff)}  # (E, K, 3), no unit
        h = self.embedding(species).unsqueeze(1)  # (N, 1, F)
        if not self.average_each_layer:
            h = h.expand(h.shape[0], frames.shape[1], h.shape[-1])  # (N, K, F): one per frame
        return {"h": h}, geometry

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        h = state["h"]
        m = torch.zeros(0)
        for index, block in enumerate(self.layers):
            if index == k:
                h, m = block(h, geometry["edge_index"], geometry["rbf"], geometry["coords"],
                             geometry["envelope"], self.average_each_layer)  # (N, Kh, F), (E, K, F)
        return {"h": h, "m": m}

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        h, m = state["h"], state["m"]
        frames, proj = geometry["frames"], geometry["proj"]
        n_edges, n_frames = frames.shape[0], frames.shape[1]
        scalars = h.mean(dim=1)  # (N, F): the frame average
        # Vectors predicted in each frame from the last layer's per-frame messages: a radial
        # part along the frame's unit edge vector plus a free part, then rotated back.
        unit = proj / geometry["r"].view(-1, 1, 1)  # (E, K, 3)
        v = (unit.unsqueeze(-1) * self.vec_radial(m).unsqueeze(-2)  # (E, K, 3, C)
             + self.vec_free(m).view(n_edges, n_frames, 3, self.n_vectors))
        v = torch.einsum("ekab,ekbc->eac", frames, v) / n_frames  # (E, 3, C), F_k v'_k averaged
        vectors = scatter_sum(v, geometry["edge_index"][0], h.shape[0])  # (N, 3, C)
        return scalars, vectors


class FrameAveraged(LayeredRepresentation):
    """A ``FrameMPNN`` (``self.network``) fed the frames that a subclass's ``embed`` builds:
    its layers and readout are the network's (shared by FAENet and SymGNN)."""

    EDGE_GATE = "envelope"  # graph["edge_mask"] multiplies this (representation.py)

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        self.check_layer(k)
        return self.network.layer(k, state, geometry)

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        scalars, vectors = self.network.readout(state, geometry)
        return {"scalars": scalars, "vectors": vectors}  # (N, F), (N, 3, C)


class FAENet(FrameAveraged):
    """Frame-averaged unconstrained network (see the module docstring for ``frames``).

    Args:
        n_species, cutoff (Å), n_features, n_layers, n_rbf: as for every geoff model.
        frames: ``"local"`` | ``"global"`` | ``"stochastic"``.
        n_samples: frames drawn per structure and call in training mode for
            ``frames="stochastic"`` (1 = FAENet's SFA); unused otherwise.
        group: ``"O3"`` (8 sign choices, rotations and reflections) or ``"SO3"`` (4, rotations
            only: a reflected structure is a different structure).
        gap_scale: relative eigenvalue gap below which frame coordinates are smoothly switched
            off (``frames.gap_gates``); 0 gives plain PCA frames (energy discontinuous at
            degeneracies; forces finite).
        n_vectors: vector channels for the direct force head.

    Pieces (``representation.py``): ``FrameMPNN``'s, after ``embed`` has built the frames
    (per-atom or per-structure, stochastic in training). State ``{"h": (N, Kh, F)}``
    exchanged between layers (Kh = 1 for local frames, K otherwise), plus the last layer's
    messages ``m`` (E, K, F) into each atom. ``is_local`` is False for ``"global"`` and
    ``"stochastic"`` frames: they see the whole structure.
    """

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 128,
                 n_layers: int = 3, n_rbf: int = 16, frames: str = "local", n_samples: int = 1,
                 group: str = "O3", gap_scale: float = 0.02, n_vectors: int = 8,
                 activation: str = "silu"):
        if frames not in FRAME_MODES:
            raise ValueError(f"frames must be one of {FRAME_MODES}, got {frames!r}")
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
        n_frames = 8 if group == "O3" else 4
        if not 1 <= n_samples <= n_frames:
            raise ValueError(f"n_samples (stochastic frames per call) must be in 1..{n_frames} "
                             f"for group {group!r}, got {n_samples}")
        if gap_scale < 0:
            raise ValueError(f"gap_scale must be >= 0 (0 switches the gates off), got {gap_scale}")
        # Global frames see the whole structure: not local (no MPI domain decomposition).
        super().__init__(n_scalars=n_features, n_vectors=n_vectors, n_layers=n_layers,
                         node_features=["h"], is_local=frames == "local")
        self.frames = frames
        self.group = group
        self.n_samples = n_samples
        self.gap_scale = float(gap_scale)
        self.network = FrameMPNN(n_species, cutoff, n_features, n_layers, n_rbf, n_vectors,
                                 activation, average_each_layer=frames == "local")
        # Weights of the local covariance: the same smooth envelope as the messages, so a
        # neighbour entering the cutoff changes the frame continuously.
        self.weight = PolynomialCutoff(cutoff)

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        species = graph["species"]
        receivers = graph["edge_index"][0]
        if self.frames == "local":
            w = self.weight(torch.linalg.norm(edge_vec, dim=-1))  # (E,)
            cov = neighbour_covariance(edge_vec, receivers, w, species.shape[0])  # (N, 3, 3)
            frames, gates = pca_frames(cov, self.group, self.gap_scale)  # (N, K, 3, 3), (N, 3)
            owner = receivers  # (E,): the edge uses its receiver's frame
        else:
            # Global: positions are the strained ones when stress is asked for, so the frame
            # follows the strain and stress stays the strain derivative of the energy.
            batch = graph["batch"]
            n_graphs = graph["cell"].shape[0]
            cov = structure_covariance(graph["positions"], batch, n_graphs)  # (B, 3, 3)
            frames, gates = pca_frames(cov, self.group, self.gap_scale)  # (B, K, 3, 3), (B, 3)
            if self.frames == "stochastic" and self.training:
                frames = pick_frames(frames, self.n_samples)  # (B, n_samples, 3, 3)
            owner = batch[receivers]  # (E,)
        return self.network.embed(species, graph["edge_index"], edge_vec, frames[owner],
                                  gates[owner])

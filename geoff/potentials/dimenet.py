"""DimeNet++ (Gasteiger, Giri, Margraf & Günnemann, 2020): directional message passing.

Messages live on edges. The message m_ji of edge (i <- j) is updated from the messages m_kj of
the edges (j <- k) arriving at its sender, weighted by a joint basis of the distance d_kj and
the angle at j between j->i and j->k. Distances and angles are invariants, so the model is
E(3)-invariant by construction. Per-atom features are sums over the output blocks (one after
the embedding, one after every interaction block) of the messages arriving at each atom.

Triplets are built here from ``edge_index`` (the graph has no triplet list): for edge
e = (i <- j, shift s_e) the partners are every edge f = (j <- k, shift s_f) except the
back-edge itself, i.e. k == i with s_f = -s_e. Other periodic images of i (k == i, s_f != -s_e)
are distinct atoms of the infinite crystal and are kept, so a cell smaller than the cutoff
gives the same energy per atom as its supercells.

Departures from the paper:
* Angular basis: Bessel radial functions sin(n pi d / c) / d of d_kj times Y_l^0(theta) =
  sqrt((2l + 1) / 4 pi) P_l(cos theta), instead of the spherical Bessel functions
  j_l(z_ln d / c) with the roots z_ln of j_l. Upward recursion for j_l loses precision for
  d / c small relative to l (worse in float32), while this basis is well conditioned and
  smooth; the learned projections (``n_basis_features``) mix the radial and angular parts
  anyway. cos(theta) comes from a scalar product of the edge vectors, never through arccos,
  whose derivative is infinite at theta = 0 and pi.
* Cutoff: the polynomial envelope of ``layers.PolynomialCutoff`` (p = 6, the paper's
  envelope exponent 5), applied to the radial basis of each edge and to the triplet basis
  through d_kj. Every path from an edge's message to an atom's features passes through that
  edge's radial basis (output blocks, the kj side of triplets), so energies and forces vanish
  smoothly at the cutoff without an extra factor.
* Output blocks return ``n_features`` per-atom features (summed over blocks) instead of the
  targets; ``EnergyModel`` owns the energy read-out.
* ``n_layers`` (the hyper-parameter) counts interaction blocks as the paper's n_blocks; the
  attribute ``n_layers`` (used by LAMMPS for the ghost shell) is n_blocks + 1, because the
  embedding block is already one hop: after b blocks m_ji depends on atoms b + 1 bonds from i.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from .layers import BesselBasis, PolynomialCutoff, activation, legendre_polynomials, scatter_sum
from .representation import LayeredRepresentation


def build_triplets(edge_index: Tensor, shifts: Tensor, n_atoms: int,
                   tol: float = 1e-4) -> Tuple[Tensor, Tensor]:
    """Index pairs (e, f) with e = (i <- j) and f = (j <- k), without the back-edge of e.

    Returns ``(idx_ji, idx_kj)``, each (T,) int64 edge indices: ``idx_ji`` the edge that
    receives the triplet message, ``idx_kj`` the edge it comes from. ``tol`` (Å): two periodic
    images of one atom differ by a lattice vector, never by this little, so shifts are
    compared with it rather than exactly and float rounding cannot matter.
    """
    receiver, sender = edge_index[0], edge_index[1]
    n_edges = receiver.shape[0]
    device = edge_index.device
    # Edges sorted by receiver: by_receiver[start[a]:start[a] + count[a]] are the edges into a.
    by_receiver = torch.argsort(receiver)  # (E,)
    count = torch.bincount(receiver, minlength=n_atoms)  # (N,)
    start = torch.cumsum(count, dim=0) - count  # (N,)
    # Edge e pairs with every edge into its sender j: count[j] partners, enumerated in place.
    n_partners = count[sender]  # (E,)
    idx_ji = torch.repeat_interleave(torch.arange(n_edges, device=device), n_partners)  # (T,)
    first = torch.cumsum(n_partners, dim=0) - n_partners  # (E,)
    rank = torch.arange(idx_ji.shape[0], device=device) - first[idx_ji]  # (T,)
    idx_kj = by_receiver[start[sender[idx_ji]] + rank]  # (T,)
    # The back-edge (k == i, same image) is the only partner that is not a third atom.
    same_atom = sender[idx_kj] == receiver[idx_ji]
    same_image = torch.abs(shifts[idx_ji] + shifts[idx_kj]).amax(dim=-1) < tol
    keep = ~(same_atom & same_image)
    return idx_ji[keep], idx_kj[keep]  # (T,), (T,)


class ResidualLayer(nn.Module):
    """x + act(W2 act(W1 x))."""

    def __init__(self, n: int, act: str):
        super().__init__()
        self.lin1 = nn.Linear(n, n)
        self.lin2 = nn.Linear(n, n)
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.lin2(self.act(self.lin1(x))))  # (E, F)


class EmbeddingBlock(nn.Module):
    """Initial message m_ji = act(W [h_j, h_i, act(W_rbf rbf_ji)])."""

    def __init__(self, n_species: int, n_features: int, n_rbf: int, act: str):
        super().__init__()
        self.embedding = nn.Embedding(n_species, n_features)
        self.lin_rbf = nn.Linear(n_rbf, n_features)
        self.lin = nn.Linear(3 * n_features, n_features)
        self.act = activation(act)

    def forward(self, species: Tensor, edge_index: Tensor, rbf: Tensor) -> Tensor:
        h = self.embedding(species)  # (N, F)
        i, j = edge_index[0], edge_index[1]
        x = torch.cat([h[j], h[i], self.act(self.lin_rbf(rbf))], dim=-1)  # (E, 3F)
        return self.act(self.lin(x))  # (E, F)


class InteractionBlock(nn.Module):
    """DimeNet++ interaction: triplet messages in a narrow space, then residual updates."""

    def __init__(self, n_features: int, n_rbf: int, n_sbf: int, n_triplet_features: int,
                 n_basis_features: int, n_before_skip: int, n_after_skip: int, act: str):
        super().__init__()
        self.act = activation(act)
        # Bases projected through a narrow bottleneck without biases (the paper's basis_emb):
        # a bias would keep the filters non-zero at the cutoff.
        self.rbf_proj = nn.Sequential(nn.Linear(n_rbf, n_basis_features, bias=False),
                                      nn.Linear(n_basis_features, n_features, bias=False))
        self.sbf_proj = nn.Sequential(nn.Linear(n_sbf, n_basis_features, bias=False),
                                      nn.Linear(n_basis_features, n_triplet_features, bias=False))
        self.lin_ji = nn.Linear(n_features, n_features)
        self.lin_kj = nn.Linear(n_features, n_features)
        self.down = nn.Linear(n_features, n_triplet_features, bias=False)
        self.up = nn.Linear(n_triplet_features, n_features, bias=False)
        self.before_skip = nn.Sequential(
            *[ResidualLayer(n_features, act) for _ in range(n_before_skip)])
        self.lin_skip = nn.Linear(n_features, n_features)
        self.after_skip = nn.Sequential(
            *[ResidualLayer(n_features, act) for _ in range(n_after_skip)])

    def forward(self, m: Tensor, rbf: Tensor, sbf: Tensor, idx_ji: Tensor,
                idx_kj: Tensor) -> Tensor:
        x_ji = self.act(self.lin_ji(m))  # (E, F)
        x_kj = self.act(self.lin_kj(m)) * self.rbf_proj(rbf)  # (E, F)
        x_kj = self.act(self.down(x_kj))  # (E, F_t)
        t = x_kj[idx_kj] * self.sbf_proj(sbf)  # (T, F_t)
        x_kj = self.act(self.up(scatter_sum(t, idx_ji, m.shape[0])))  # (E, F)
        h = self.before_skip(x_ji + x_kj)  # (E, F)
        h = self.act(self.lin_skip(h)) + m  # (E, F)
        return self.after_skip(h)  # (E, F)


class OutputBlock(nn.Module):
    """Per-atom features: sum over incoming edges of filtered messages, then an MLP."""

    def __init__(self, n_features: int, n_rbf: int, n_output_features: int,
                 n_output_layers: int, act: str):
        super().__init__()
        self.lin_rbf = nn.Linear(n_rbf, n_features, bias=False)
        self.up = nn.Linear(n_features, n_output_features, bias=False)
        layers = []
        for _ in range(n_output_layers):
            layers += [nn.Linear(n_output_features, n_output_features), activation(act)]
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(n_output_features, n_features, bias=False)

    def forward(self, m: Tensor, rbf: Tensor, receiver: Tensor, n_atoms: int) -> Tensor:
        x = scatter_sum(self.lin_rbf(rbf) * m, receiver, n_atoms)  # (N, F)
        return self.out(self.mlp(self.up(x)))  # (N, F)


class DimeNetBlock(nn.Module):
    """An interaction block and the output block that reads its messages."""

    def __init__(self, interaction: InteractionBlock, output: OutputBlock):
        super().__init__()
        self.interaction = interaction
        self.output = output

    def forward(self, m: Tensor, rbf: Tensor, sbf: Tensor, idx_ji: Tensor, idx_kj: Tensor,
                receiver: Tensor, n_atoms: int) -> Tuple[Tensor, Tensor]:
        m = self.interaction(m, rbf, sbf, idx_ji, idx_kj)  # (E, F)
        return m, self.output(m, rbf, receiver, n_atoms)  # (E, F), (N, F)


class DimeNetPP(LayeredRepresentation):
    """Per-atom invariant features (N, n_features) from distances and angles.

    Args:
        n_species: number of elements.
        cutoff: neighbour cutoff (Å).
        n_features: width of the edge messages (the paper's hidden size) and of the output.
        n_layers: interaction blocks (the paper's n_blocks).
        n_rbf: radial functions, for the edge basis and for d_kj in the triplet basis.
        l_max: highest angular order of the triplet basis (the paper's n_spherical - 1).
        n_triplet_features: width of the triplet messages (the paper's int_emb_size).
        n_basis_features: bottleneck of the basis projections (the paper's basis_emb_size).
        n_output_features: width of the output-block MLPs (the paper's out_emb_size).
        n_output_layers: hidden layers in each output block.
        n_before_skip, n_after_skip: residual layers around the skip connection.
        activation: a smooth activation name from ``layers.activation``.

    Pieces (``representation.py``): the layer state lives on edges. Layer 0 is the embedding
    block (messages m_ji (E, F) from the species and the radial basis, plus the first output
    block), layer k >= 1 is interaction block k. State ``{"m": (E, F), "h": (N, F)}``: ``m``
    is an ``edge_messages`` entry (layer k + 1 reads m_kj of the edges into each sender j, so
    per-layer communication must exchange messages of edges into ghosts, not node
    features); ``h`` is the atom's running sum of output blocks, read only by the readout.
    Geometry ``edge_index``, ``species``, ``rbf`` (E, n_rbf), triplets ``idx_ji``/``idx_kj``
    (T,) and their basis ``sbf`` (T, (l_max + 1) n_rbf).
    """

    # graph["edge_mask"] scales the radial basis (representation.py): approximate, a zero
    # mask does not remove the edge's message (biases, triplets keep it).
    EDGE_GATE = "rbf"

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 96,
                 n_layers: int = 4, n_rbf: int = 6, l_max: int = 6,
                 n_triplet_features: int = 64, n_basis_features: int = 8,
                 n_output_features: int = 96, n_output_layers: int = 3,
                 n_before_skip: int = 1, n_after_skip: int = 2, activation: str = "silu"):
        # Receptive field in bonds: the embedding block is already one hop (module docstring).
        super().__init__(n_scalars=n_features, n_vectors=0, n_layers=n_layers + 1,
                         node_features=[], edge_messages=["m"])
        self.n_rbf = n_rbf
        self.l_max = l_max
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.envelope = PolynomialCutoff(cutoff)
        # Y_l^0 = sqrt((2l + 1) / 4 pi) P_l(cos theta).
        norm = torch.tensor([math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(l_max + 1)],
                            dtype=torch.get_default_dtype())
        self.register_buffer("ylm_norm", norm)
        n_sbf = (l_max + 1) * n_rbf
        self.embedding = EmbeddingBlock(n_species, n_features, n_rbf, activation)
        self.output0 = OutputBlock(n_features, n_rbf, n_output_features, n_output_layers,
                                   activation)
        self.blocks = nn.ModuleList([
            DimeNetBlock(
                InteractionBlock(n_features, n_rbf, n_sbf, n_triplet_features, n_basis_features,
                                 n_before_skip, n_after_skip, activation),
                OutputBlock(n_features, n_rbf, n_output_features, n_output_layers, activation),
            )
            for _ in range(n_layers)
        ])

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        edge_index = graph["edge_index"]
        species = graph["species"]
        # Distinct points in any valid graph, so d > 0; the clamp guards cos(theta) and 1/d
        # against a duplicate atom rather than changing any real value.
        d = torch.linalg.norm(edge_vec, dim=-1).clamp(min=1e-9)  # (E,)
        rbf = self.rbf(d) * self.envelope(d).unsqueeze(-1)  # (E, n_rbf)

        idx_ji, idx_kj = build_triplets(edge_index, graph["shifts"], species.shape[0])  # (T,)
        # Angle at j between j->i (= -r_ij) and j->k (= r_jk), as a cosine: no arccos.
        cos = -(edge_vec[idx_ji] * edge_vec[idx_kj]).sum(dim=-1) / (d[idx_ji] * d[idx_kj])  # (T,)
        ylm = legendre_polynomials(cos, self.l_max) * self.ylm_norm  # (T, l_max + 1)
        # Joint basis: every angular function times every radial function of d_kj (with its
        # envelope, so a triplet fades out as k leaves j's cutoff sphere).
        sbf = (ylm.unsqueeze(-1) * rbf[idx_kj].unsqueeze(1)).reshape(
            ylm.shape[0], (self.l_max + 1) * self.n_rbf)  # (T, (l_max + 1) n_rbf)
        geometry = {"edge_index": edge_index, "species": species, "rbf": rbf, "sbf": sbf,
                    "idx_ji": idx_ji, "idx_kj": idx_kj}
        state: Dict[str, Tensor] = {}  # layer 0 (the embedding block) starts from species
        return state, geometry

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        self.check_layer(k)
        edge_index, rbf = geometry["edge_index"], geometry["rbf"]
        receiver = edge_index[0]
        n_atoms = geometry["species"].shape[0]
        if k == 0:
            m = self.embedding(geometry["species"], edge_index, rbf)  # (E, F)
            return {"m": m, "h": self.output0(m, rbf, receiver, n_atoms)}  # (E, F), (N, F)
        m, h = state["m"], state["h"]
        for index, block in enumerate(self.blocks):
            if index == k - 1:
                m, out = block(m, rbf, geometry["sbf"], geometry["idx_ji"], geometry["idx_kj"],
                               receiver, n_atoms)  # (E, F), (N, F)
                h = h + out  # (N, F)
        return {"m": m, "h": h}

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return {"scalars": state["h"]}  # (N, F)

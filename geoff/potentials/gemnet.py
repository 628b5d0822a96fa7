"""GemNet (Gasteiger, Becker & Günnemann, 2021): directed edge embeddings, two-hop messages.

The state of the model lives on directed edges: m_ca is the embedding of the edge (c <- a)
(``edge_index`` = (receiver c, sender a)); atom embeddings h_c are kept beside it. Message
passing carries edge embeddings, so the model does not decompose into node-feature layers.
One interaction block does, in this order:

* triplets (GemNet-T): m_ca collects m_ba over b in N(a), b != c, filtered by a radial
  function of d_ba and a joint basis of d_ba and the angle at a between a->c and a->b;
* quadruplets (GemNet-Q, ``quadruplets=True``): m_ca collects m_db over the chains
  c <- a <- b <- d (d != a, d != c), filtered by a radial function of d_db and a basis of
  d_db, the angle at b between b->a and b->d and the dihedral angle of the planes (c, a, b)
  and (a, b, d) about a-b, times the triplet basis of (d_ba, angle cab);
* both messages are also sent to the reverse edge (a <- c) (the paper's symmetric message
  passing), so m_ca and m_ac learn from both ends;
* atoms: h_c += MLP(sum_a filter(d_ca) * m_ca); then every edge takes in its two atoms,
  m_ca += act(W [h_c, h_a, m_ca]);
* an output block reads per-atom features from the edges (as in DimeNet++); the features
  returned are the sum over the output blocks.

Everything is a function of distances, angles and dihedrals, so the model is E(3)-invariant.
Triplets come from ``dimenet.build_triplets``; quadruplets are pairs of triplets that share
their middle edge, built here from the edges the model receives, and only from edges shorter
than ``quadruplet_cutoff`` (all three bonds), which bounds their number on dense metals.

Departures from the paper:
* Dihedral basis: sin^m(alpha) sin^m(beta) cos(m phi) for m = 0..l_max_quadruplet (alpha, beta
  the angles at a and at b, phi the dihedral), times P_k(cos beta) with k + m <=
  l_max_quadruplet, times a Bessel radial basis of d_db; the paper uses spherical Bessel
  functions times Y_l^m(beta, phi). The sin^m factors make the basis a polynomial in dot
  products of the three bond vectors (Chebyshev recursion, no arccos, no cross products), so
  it is smooth when c, a, b or a, b, d are collinear, where phi is undefined (the paper's
  Y_l^m(beta, phi) jumps there when only c, a, b are collinear). Only cos(m phi) terms: the
  model is invariant under reflections as the other invariant models are.
* Angular basis of triplets: as in ``dimenet.py`` (Bessel functions times Y_l^0).
* Bases enter by a Hadamard product after projection through a narrow bottleneck (DimeNet++'s
  form) instead of the paper's bilinear layer; no fitted scaling factors (sums of two or three
  messages are scaled by 1/sqrt(count) instead); one width ``n_features`` for atoms and edges.
* Quadruplet cutoff: the paper has separate embedding and interaction cutoffs; here every
  edge within ``cutoff`` carries an embedding and triplets, and the three bonds of a
  quadruplet must be shorter than ``quadruplet_cutoff`` (default cutoff / 2: the chain
  c-a-b-d then spans at most one cutoff, and quadruplets add no graph hop). Each quadruplet
  is damped by the polynomial envelope of that cutoff on all three bonds, so quadruplets
  appear and vanish smoothly.
* Cutoff: ``layers.PolynomialCutoff`` (p = 6) on every radial basis, as in ``dimenet.py``;
  every path from an edge into an atom passes through that edge's envelope.
* Outputs: ``n_features`` per-atom features; ``EnergyModel`` owns the energy read-out and the
  forces (autograd), so there is no direct-force (GemNet-dT) variant here.
* ``n_layers`` (the hyper-parameter) counts interaction blocks (the paper's n_blocks). The
  attribute ``n_layers`` is the receptive field in graph hops plus one (what LAMMPS' ghost
  shell needs): each block adds one hop for the triplets (two for quadruplets whose three
  bonds can span more than one cutoff) and one for the atom -> edge update, and the output
  one more: 2 n_blocks + 1 (3 n_blocks + 1 with such quadruplets).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from . import layers
from .dimenet import OutputBlock, ResidualLayer, build_triplets
from .layers import BesselBasis, PolynomialCutoff, activation, legendre_polynomials, scatter_sum
from .representation import Representation


def reverse_edges(edge_index: Tensor, shifts: Tensor, n_atoms: int, tol: float = 1e-4) -> Tensor:
    """(E,) index of the reverse of every edge ((c <- a, s) -> (a <- c, -s)), or E if the graph
    lacks it (LAMMPS' ghost graph drops edges into its outermost ghosts; those edges never
    reach a local energy). ``tol`` (Å) as in ``dimenet.build_triplets``."""
    receiver, sender = edge_index[0], edge_index[1]
    n_edges = receiver.shape[0]
    device = edge_index.device
    key = receiver * n_atoms + sender  # (E,)
    order = torch.argsort(key)  # (E,)
    sorted_key = key[order]  # (E,)
    wanted = sender * n_atoms + receiver  # (E,) key of the reverse edge
    lo = torch.searchsorted(sorted_key, wanted)  # (E,)
    n_cand = torch.searchsorted(sorted_key, wanted, right=True) - lo  # (E,) periodic images
    edge = torch.repeat_interleave(torch.arange(n_edges, device=device), n_cand)  # (C,)
    first = torch.cumsum(n_cand, dim=0) - n_cand  # (E,)
    cand = order[lo[edge] + torch.arange(edge.shape[0], device=device) - first[edge]]  # (C,)
    match = torch.abs(shifts[edge] + shifts[cand]).amax(dim=-1) < tol  # (C,)
    rev = torch.full((n_edges,), n_edges, dtype=torch.long, device=device)  # (E,)
    return rev.index_put((edge[match],), cand[match])  # (E,)


def build_quadruplets(idx_ji: Tensor, idx_kj: Tensor, edge_index: Tensor, shifts: Tensor,
                      short: Tensor, tol: float = 1e-4) -> Tuple[Tensor, Tensor]:
    """Chains c <- a <- b <- d as pairs of triplets (e, f), (f, g) sharing the middle edge
    f = (a <- b), with e = (c <- a), g = (b <- d) and all three edges ``short`` ((E,) bool).

    Returns ``(q_outer, q_inner)``, each (Q,) indices into the triplet list: q_outer is the
    triplet (e, f), q_inner the triplet (f, g). Triplets already exclude b == c and d == a
    (same image); d == c (same image, a triangle the triplets see) is dropped here.
    """
    device = idx_ji.device
    t_short = torch.nonzero(short[idx_ji] & short[idx_kj]).squeeze(-1)  # (Ts,)
    out_e = idx_ji[t_short]  # (Ts,)
    in_e = idx_kj[t_short]  # (Ts,)
    n_edges = short.shape[0]
    # Short triplets grouped by their receiving edge: partners of triplet (e, f) are the
    # triplets whose receiving edge is f.
    by_out = torch.argsort(out_e)  # (Ts,)
    count = torch.bincount(out_e, minlength=n_edges)  # (E,)
    start = torch.cumsum(count, dim=0) - count  # (E,)
    n_partners = count[in_e]  # (Ts,)
    t1 = torch.repeat_interleave(torch.arange(out_e.shape[0], device=device), n_partners)  # (Q,)
    first = torch.cumsum(n_partners, dim=0) - n_partners  # (Ts,)
    rank = torch.arange(t1.shape[0], device=device) - first[t1]  # (Q,)
    t2 = by_out[start[in_e[t1]] + rank]  # (Q,)
    e, f, g = out_e[t1], in_e[t1], in_e[t2]  # (Q,) each
    same_atom = edge_index[1][g] == edge_index[0][e]  # (Q,) d == c
    same_image = torch.abs(shifts[e] + shifts[f] + shifts[g]).amax(dim=-1) < tol  # (Q,)
    keep = ~(same_atom & same_image)  # (Q,)
    return t_short[t1[keep]], t_short[t2[keep]]  # (Q,), (Q,)


def dihedral_harmonics(cos_a: Tensor, cos_b: Tensor, u_dot_w: Tensor, m_max: int) -> Tensor:
    """sin^m(alpha) sin^m(beta) cos(m phi), m = 0..m_max: (Q,) x 3 -> (Q, m_max + 1).

    alpha: angle at a between a->c and a->b; beta: angle at b between b->a and b->d; phi: the
    dihedral about a-b; ``u_dot_w`` = unit(a->c) . unit(b->d). With z = X + iY, X = sin sin
    cos(phi) = u.w + cos_a cos_b and |z|^2 = p^2 = sin^2 alpha sin^2 beta, the real parts
    Re z^m obey Re z^(m+1) = 2 X Re z^m - p^2 Re z^(m-1): polynomials in dot products.
    """
    x = u_dot_w + cos_a * cos_b  # (Q,)
    p2 = (1.0 - cos_a * cos_a) * (1.0 - cos_b * cos_b)  # (Q,)
    out: List[Tensor] = [torch.ones_like(x)]
    if m_max >= 1:
        out.append(x)
    for m in range(2, m_max + 1):
        out.append(2.0 * x * out[m - 1] - p2 * out[m - 2])
    return torch.stack(out, dim=-1)  # (Q, m_max + 1)


class EdgeFromAtoms(nn.Module):
    """act(W [h_c, h_a, x_ca]): an edge embedding from its two atoms and an edge input."""

    def __init__(self, n_features: int, n_edge_in: int, act: str):
        super().__init__()
        self.lin = nn.Linear(2 * n_features + n_edge_in, n_features)
        self.act = activation(act)

    def forward(self, h: Tensor, edge_index: Tensor, x: Tensor) -> Tensor:
        c, a = edge_index[0], edge_index[1]
        return self.act(self.lin(torch.cat([h[c], h[a], x], dim=-1)))  # (E, F)


def basis_projection(n_basis: int, n_bottleneck: int, n_out: int) -> nn.Sequential:
    """Basis -> features through a narrow bottleneck, no biases: a bias would keep the filter
    non-zero where the basis (and its envelope) vanishes."""
    return nn.Sequential(nn.Linear(n_basis, n_bottleneck, bias=False),
                         nn.Linear(n_bottleneck, n_out, bias=False))


class ManyBodyMessage(nn.Module):
    """One triplet or quadruplet message into every edge, sent to it and to its reverse.

    The source edge's embedding is filtered by a radial function of its distance, projected
    down to ``n_inner`` channels, gathered per triplet / quadruplet, multiplied by the
    projected basis, summed into the receiving edge and projected back up (once for the edge,
    once for its reverse).
    """

    def __init__(self, n_features: int, n_rbf: int, n_inner: int, n_basis_features: int,
                 act: str):
        super().__init__()
        self.act = activation(act)
        self.lin_source = nn.Linear(n_features, n_features)
        self.rbf_proj = basis_projection(n_rbf, n_basis_features, n_features)
        self.down = nn.Linear(n_features, n_inner, bias=False)
        self.up_edge = nn.Linear(n_inner, n_features, bias=False)
        self.up_reverse = nn.Linear(n_inner, n_features, bias=False)

    def forward(self, m: Tensor, rbf: Tensor, source: Tensor, target: Tensor, filt: Tensor,
                rev: Tensor) -> Tensor:
        x = self.act(self.lin_source(m)) * self.rbf_proj(rbf)  # (E, F)
        x = self.act(self.down(x))  # (E, F_in)
        agg = scatter_sum(x[source] * filt, target, m.shape[0])  # (E, F_in)
        to_reverse = self.act(self.up_reverse(agg))  # (E, F)
        # rev == E where the graph lacks the reverse edge: a zero row.
        padded = torch.cat([to_reverse, torch.zeros_like(to_reverse[:1])], dim=0)  # (E + 1, F)
        return (self.act(self.up_edge(agg)) + padded[rev]) * (1.0 / math.sqrt(2.0))  # (E, F)


class QuadrupletMessage(nn.Module):
    """The quadruplet message: filter = projected quadruplet basis x projected triplet basis
    of the outer triplet (d_ba, angle cab), source edge g = (b <- d), target e = (c <- a)."""

    def __init__(self, n_features: int, n_rbf: int, n_cbf: int, n_sbf: int, n_inner: int,
                 n_basis_features: int, act: str):
        super().__init__()
        self.message = ManyBodyMessage(n_features, n_rbf, n_inner, n_basis_features, act)
        self.cbf_proj = basis_projection(n_cbf, n_basis_features, n_inner)
        self.sbf_proj = basis_projection(n_sbf, n_basis_features, n_inner)

    def forward(self, m: Tensor, rbf: Tensor, cbf: Tensor, sbf: Tensor,
                geometry: Dict[str, Tensor]) -> Tensor:
        q_outer, q_inner = geometry["q_outer"], geometry["q_inner"]
        filt = self.sbf_proj(sbf) * self.cbf_proj(cbf)[q_outer]  # (Q, F_q)
        source = geometry["idx_kj"][q_inner]  # (Q,) edge g
        target = geometry["idx_ji"][q_outer]  # (Q,) edge e
        return self.message(m, rbf, source, target, filt, geometry["rev"])  # (E, F)


class InteractionBlock(nn.Module):
    """Triplet (and quadruplet) messages, residual edge update, atom update, atoms -> edges."""

    def __init__(self, n_features: int, n_rbf: int, n_cbf: int, n_sbf: int,
                 n_triplet_features: int, n_quadruplet_features: int, n_basis_features: int,
                 n_output_features: int, quadruplets: bool, n_before_skip: int,
                 n_after_skip: int, act: str):
        super().__init__()
        self.act = activation(act)
        self.lin_skip = nn.Linear(n_features, n_features)
        self.cbf_proj = basis_projection(n_cbf, n_basis_features, n_triplet_features)
        self.triplet = ManyBodyMessage(n_features, n_rbf, n_triplet_features, n_basis_features, act)
        # None for GemNet-T: TorchScript prunes the branch (as EnergyModel's unused heads).
        self.quadruplet = None
        if quadruplets:
            self.quadruplet = QuadrupletMessage(n_features, n_rbf, n_cbf, n_sbf,
                                                n_quadruplet_features, n_basis_features, act)
        self.n_messages = 3.0 if quadruplets else 2.0
        self.before_skip = nn.Sequential(*[ResidualLayer(n_features, act) for _ in range(n_before_skip)])
        self.after_skip = nn.Sequential(*[ResidualLayer(n_features, act) for _ in range(n_after_skip)])
        self.atom_update = OutputBlock(n_features, n_rbf, n_output_features, 1, act)
        self.concat = EdgeFromAtoms(n_features, n_features, act)
        self.after_concat = ResidualLayer(n_features, act)

    def forward(self, h: Tensor, m: Tensor, rbf: Tensor, cbf: Tensor, sbf: Tensor,
                geometry: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        edge_index = geometry["edge_index"]
        idx_ji, idx_kj, rev = geometry["idx_ji"], geometry["idx_kj"], geometry["rev"]
        x = self.act(self.lin_skip(m))  # (E, F)
        x = x + self.triplet(m, rbf, idx_kj, idx_ji, self.cbf_proj(cbf), rev)  # (E, F)
        quadruplet = self.quadruplet
        if quadruplet is not None:
            x = x + quadruplet(m, rbf, cbf, sbf, geometry)  # (E, F)
        x = self.before_skip(x * (1.0 / math.sqrt(self.n_messages)))  # (E, F)
        m = self.after_skip((m + x) * (1.0 / math.sqrt(2.0)))  # (E, F)
        h = h + self.atom_update(m, rbf, edge_index[0], h.shape[0])  # (N, F)
        m = self.after_concat(m + self.concat(h, edge_index, m))  # (E, F)
        return h, m


class GemNet(Representation):
    """Per-atom invariant features (N, n_features) from distances, angles (and dihedrals).

    A ``Representation`` with ``forward`` only (not decomposable into node-feature layers):
    its state lives on directed edges and one block spans two graph hops, so a LAMMPS run
    over MPI uses the ghost-shell mode for it (``receptive_hops`` cutoffs of ghosts).

    Args:
        n_species: number of elements.
        cutoff: neighbour cutoff (Å) of the edges and triplets.
        n_features: width of atom and edge embeddings and of the output.
        n_layers: interaction blocks (the paper's n_blocks).
        n_rbf: radial functions (edges, triplets, quadruplets).
        l_max: highest angular order of the triplet basis (the paper's n_spherical - 1).
        quadruplets: add the quadruplet (dihedral) message (GemNet-Q).
        quadruplet_cutoff: bonds of a quadruplet are shorter than this (Å); default cutoff / 2.
        l_max_quadruplet: highest k + m of the quadruplet basis P_k(cos beta) x dihedral m.
        n_triplet_features, n_quadruplet_features: widths of the triplet / quadruplet messages.
        n_basis_features: bottleneck of the basis projections.
        n_output_features: width of the output and atom-update MLPs.
        n_output_layers: hidden layers of each output block.
        n_before_skip, n_after_skip: residual layers around the skip connection.
        activation: a smooth activation name from ``layers.activation``.
    """

    def __init__(self, n_species: int, cutoff: float = 5.0, n_features: int = 128,
                 n_layers: int = 4, n_rbf: int = 6, l_max: int = 6, quadruplets: bool = False,
                 quadruplet_cutoff: Optional[float] = None, l_max_quadruplet: int = 3,
                 n_triplet_features: int = 64, n_quadruplet_features: int = 32,
                 n_basis_features: int = 16, n_output_features: int = 128,
                 n_output_layers: int = 2, n_before_skip: int = 1, n_after_skip: int = 1,
                 activation: str = "silu"):
        q_cut = 0.5 * cutoff if quadruplet_cutoff is None else float(quadruplet_cutoff)
        if quadruplets and not 0.0 < q_cut <= cutoff:
            raise ValueError(f"quadruplet_cutoff must be in (0, cutoff = {cutoff}], got {q_cut}")
        # Receptive field in graph hops (module docstring): a quadruplet whose bonds span more
        # than one cutoff reaches two hops in one message.
        per_block = 3 if (quadruplets and 2.0 * q_cut > cutoff) else 2
        super().__init__(n_features, 0, per_block * n_layers + 1)
        self.quadruplets = bool(quadruplets)
        self.quadruplet_cutoff = q_cut
        self.n_rbf = n_rbf
        self.l_max = l_max
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.envelope = PolynomialCutoff(cutoff)
        self.quad_rbf = BesselBasis(q_cut, n_rbf)
        self.quad_envelope = PolynomialCutoff(q_cut)
        norm = torch.tensor([math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(l_max + 1)],
                            dtype=torch.get_default_dtype())
        self.register_buffer("ylm_norm", norm)
        # Quadruplet angular functions: P_k(cos beta) x dihedral harmonic m, k + m <= l_max_q.
        pairs = [(k, m) for m in range(l_max_quadruplet + 1) for k in range(l_max_quadruplet + 1 - m)]
        self.register_buffer("quad_k", torch.tensor([k for k, _ in pairs], dtype=torch.long))
        self.register_buffer("quad_m", torch.tensor([m for _, m in pairs], dtype=torch.long))
        self.l_max_quadruplet = l_max_quadruplet
        n_cbf = (l_max + 1) * n_rbf
        n_sbf = len(pairs) * n_rbf
        self.n_cbf, self.n_sbf = n_cbf, n_sbf
        self.embedding = nn.Embedding(n_species, n_features)
        self.lin_rbf = nn.Linear(n_rbf, n_features)
        self.edge_embedding = EdgeFromAtoms(n_features, n_features, activation)
        self.act = layers.activation(activation)  # the argument shadows the function
        self.output0 = OutputBlock(n_features, n_rbf, n_output_features, n_output_layers, activation)
        self.blocks = nn.ModuleList([
            InteractionBlock(n_features, n_rbf, n_cbf, n_sbf, n_triplet_features,
                             n_quadruplet_features, n_basis_features, n_output_features,
                             self.quadruplets, n_before_skip, n_after_skip, activation)
            for _ in range(n_layers)])
        self.outputs = nn.ModuleList([
            OutputBlock(n_features, n_rbf, n_output_features, n_output_layers, activation)
            for _ in range(n_layers)])

    def triplet_basis(self, cos: Tensor, rbf_in: Tensor) -> Tensor:
        """Y_l^0(cos) times every radial function of the source edge: (T, (l_max + 1) n_rbf)."""
        ylm = legendre_polynomials(cos, self.l_max) * self.ylm_norm  # (T, l_max + 1)
        return (ylm.unsqueeze(-1) * rbf_in.unsqueeze(1)).reshape(cos.shape[0], self.n_cbf)  # (T, n_cbf)

    def quadruplet_basis(self, d: Tensor, edge_vec: Tensor, cos: Tensor, idx_ji: Tensor,
                         idx_kj: Tensor, q_outer: Tensor, q_inner: Tensor) -> Tensor:
        """Radial x angular x dihedral functions of each chain c <- a <- b <- d, damped by the
        quadruplet envelope of its three bonds: (Q, n_sbf)."""
        e, f, g = idx_ji[q_outer], idx_kj[q_outer], idx_kj[q_inner]  # (Q,) each
        cos_a, cos_b = cos[q_outer], cos[q_inner]  # (Q,) angles at a and at b
        # unit(a->c) . unit(b->d); edge_vec[e] points c->a, edge_vec[g] points b->d.
        u_dot_w = -(edge_vec[e] * edge_vec[g]).sum(dim=-1) / (d[e] * d[g])  # (Q,)
        dihedral = dihedral_harmonics(cos_a, cos_b, u_dot_w, self.l_max_quadruplet)  # (Q, M+1)
        polar = legendre_polynomials(cos_b, self.l_max_quadruplet)  # (Q, M+1)
        angular = polar[:, self.quad_k] * dihedral[:, self.quad_m]  # (Q, n_ang)
        env = self.quad_envelope(d)  # (E,)
        radial = self.quad_rbf(d[g]) * (env[e] * env[f] * env[g]).unsqueeze(-1)  # (Q, n_rbf)
        return (angular.unsqueeze(-1) * radial.unsqueeze(1)).reshape(e.shape[0], self.n_sbf)  # (Q, n_sbf)

    def forward(self, data: Dict[str, Tensor], edge_vec: Tensor) -> Dict[str, Tensor]:
        edge_index = data["edge_index"]
        species = data["species"]
        n_atoms = species.shape[0]
        receiver = edge_index[0]
        # Distinct points in a valid graph: d > 0; the clamp only guards 1/d and the cosines.
        d = torch.linalg.norm(edge_vec, dim=-1).clamp(min=1e-9)  # (E,)
        rbf = self.rbf(d) * self.envelope(d).unsqueeze(-1)  # (E, n_rbf)

        idx_ji, idx_kj = build_triplets(edge_index, data["shifts"], n_atoms)  # (T,), (T,)
        # Angle at the shared atom between its two bonds (dimenet.py), as a cosine.
        cos = -(edge_vec[idx_ji] * edge_vec[idx_kj]).sum(dim=-1) / (d[idx_ji] * d[idx_kj])  # (T,)
        cbf = self.triplet_basis(cos, rbf[idx_kj])  # (T, n_cbf)
        geometry: Dict[str, Tensor] = {
            "edge_index": edge_index, "idx_ji": idx_ji, "idx_kj": idx_kj,
            "rev": reverse_edges(edge_index, data["shifts"], n_atoms)}
        sbf = cbf[:0]  # (0, .) placeholder for GemNet-T
        if self.quadruplets:
            short = d < self.quadruplet_cutoff  # (E,)
            q_outer, q_inner = build_quadruplets(idx_ji, idx_kj, edge_index, data["shifts"], short)
            geometry["q_outer"], geometry["q_inner"] = q_outer, q_inner  # (Q,), (Q,)
            sbf = self.quadruplet_basis(d, edge_vec, cos, idx_ji, idx_kj, q_outer, q_inner)

        h = self.embedding(species)  # (N, F)
        m = self.edge_embedding(h, edge_index, self.act(self.lin_rbf(rbf)))  # (E, F)
        out = self.output0(m, rbf, receiver, n_atoms)  # (N, F)
        for block, output in zip(self.blocks, self.outputs):
            h, m = block(h, m, rbf, cbf, sbf, geometry)  # (N, F), (E, F)
            out = out + output(m, rbf, receiver, n_atoms)  # (N, F)
        return {"scalars": out}  # (N, F)

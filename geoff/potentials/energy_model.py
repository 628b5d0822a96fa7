"""EnergyModel: the one place where energies, forces, stress and the direct head live.

Every architecture in ``geoff.potentials`` is a *representation* (the contract is written
once, in ``representation.py``): a module mapping a graph and its edge vectors to per-atom
features::

    representation(graph, edge_vec) -> {"scalars": (N, F), optionally "vectors": (N, 3, C)}

with attributes ``n_scalars`` (F), ``n_vectors`` (C, 0 if none), ``n_layers`` and
``is_local``. ``EnergyModel`` adds the rest, identically for all of them:

* per-atom energy ``e_i = scale[z_i] * head(h_i) + shift[z_i]`` (eV), summed per structure
  over atoms below ``n_local`` when the graph has it (LAMMPS ghosts are not counted);
* conservative forces ``F = -dE/dx`` and stress ``sigma = (1/V) dE/d(eps)`` from one backward
  pass through a symmetric strain ``eps`` applied to positions, shifts and cell;
* an optional direct force head (an equivariant per-atom vector): from the representation's
  vector channels when it has them, otherwise a sum over edges of learned scalars times unit
  edge vectors.

``force_head``: ``"conservative"`` (forces = -dE/dx), ``"direct"`` (forces from the vector
head; no backward pass unless stress is asked for) or ``"both"`` (``forces`` conservative and
``direct_forces`` from the head, on the same features).
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .layers import BesselBasis, PolynomialCutoff, mlp, scatter_sum
from .property_model import check_property_names, property_heads
from .representation import contract

FORCE_HEADS = ("conservative", "direct", "both")


class EdgeVectorHead(nn.Module):
    """Direct forces for representations without vector features.

    F_i = sum_j w_ij * u(r_ij) * r_ij / |r_ij| with w_ij = w(h_i, h_j, r) + w(h_j, h_i, r):
    equivariant because the weights are invariant and the unit vectors rotate with the
    structure, and the weights are symmetric in i, j so that pair contributions cancel
    (sum_i F_i = 0: no net force, no centre-of-mass drift). Output (N, 3), eV/Å.
    """

    def __init__(self, n_scalars: int, cutoff: float, n_rbf: int = 8):
        super().__init__()
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.envelope = PolynomialCutoff(cutoff)
        self.weight = mlp([2 * n_scalars + n_rbf, n_scalars, 1])

    def forward(self, h: Tensor, edge_index: Tensor, edge_vec: Tensor, scale: Tensor) -> Tensor:
        """``scale`` (N,): per-atom energy scale, applied symmetrically to each pair."""
        i, j = edge_index[0], edge_index[1]
        r = torch.linalg.norm(edge_vec, dim=-1)  # (E,)
        rbf = self.rbf(r)  # (E, n_rbf)
        w = self.weight(torch.cat([h[i], h[j], rbf], dim=-1)) \
            + self.weight(torch.cat([h[j], h[i], rbf], dim=-1))  # (E, 1)
        w = w.squeeze(-1) * self.envelope(r) * 0.5 * (scale[i] + scale[j])  # (E,)
        return scatter_sum((w / r).unsqueeze(-1) * edge_vec, i, h.shape[0])  # (N, 3)


class VectorChannelHead(nn.Module):
    """Direct forces as a learned linear combination of vector channels (N, 3, C) -> (N, 3)."""

    def __init__(self, n_vectors: int):
        super().__init__()
        self.linear = nn.Linear(n_vectors, 1, bias=False)  # a bias would break equivariance

    def forward(self, v: Tensor) -> Tensor:
        return self.linear(v).squeeze(-1)


class EnergyModel(nn.Module):
    """Energy, forces, stress (and direct forces) from any representation.

    Args:
        representation: the architecture (see ``representation.py``).
        species: element symbols; ``graph["species"]`` indexes into this list.
        cutoff: neighbour cutoff in Å (the graph must contain all pairs within it).
        force_head: ``"conservative"``, ``"direct"`` or ``"both"``.
        name, hparams: the registry name and hyper-parameters, kept for checkpoints.
        properties: names of per-atom scalar heads (``property_model.py``): each adds
            ``out[name]`` (N,) to the output.

    Attributes read by the export and LAMMPS: ``species``, ``cutoff``, ``n_layers`` and
    ``is_local`` (the representation's).
    """

    __jit_unused_properties__ = ["config"]

    def __init__(
        self,
        representation: nn.Module,
        species: List[str],
        cutoff: float,
        force_head: str = "conservative",
        name: str = "",
        hparams: Optional[dict] = None,
        properties: Sequence[str] = (),
    ):
        super().__init__()
        if force_head not in FORCE_HEADS:
            raise ValueError(f"force_head must be one of {FORCE_HEADS}, got {force_head!r}")
        if len(set(species)) != len(species) or not species:
            raise ValueError(f"species must be a non-empty list of distinct symbols, got {species}")
        self.representation = representation
        self.species: List[str] = list(species)
        self.cutoff = float(cutoff)
        n_scalars, n_vectors, n_layers, is_local = contract(representation)
        self.n_layers = n_layers
        self.is_local = is_local
        self.force_head = force_head
        self.conservative = force_head in ("conservative", "both")
        self.direct = force_head in ("direct", "both")
        self.model_name = name
        self.properties: List[str] = check_property_names(properties)
        config = {"name": name, "species": self.species, "cutoff": self.cutoff,
                  "force_head": force_head, "hparams": hparams or {}}
        if self.properties:  # absent for energy models: their configs are unchanged
            config["properties"] = self.properties
        self.config_json = json.dumps(config, sort_keys=True)
        self.energy_head = mlp([n_scalars, max(n_scalars // 2, 1), 1])
        # Unused heads are None: TorchScript prunes the branches (as in torchvision's ResNet).
        self.edge_vector_head = None
        self.vector_channel_head = None
        if self.direct and n_vectors > 0:
            self.vector_channel_head = VectorChannelHead(n_vectors)
        elif self.direct:
            self.edge_vector_head = EdgeVectorHead(n_scalars, cutoff)
        skip_vectors = getattr(representation, "skip_vectors", None)
        if self.vector_channel_head is None and skip_vectors is not None:
            skip_vectors()  # no head reads them (MACE then skips its last l > 0 paths)
        # Per-element energy shift (eV) and scale (eV): set from data by the trainer.
        self.register_buffer("atomic_energies", torch.zeros(len(species)))
        self.register_buffer("scale", torch.ones(len(species)))
        self.property_heads = property_heads(self.properties, n_scalars, len(species))

    @property
    def config(self) -> dict:
        return json.loads(self.config_json)

    @torch.jit.unused
    def set_normalisation(self, atomic_energies, scale) -> None:
        """Per-element energy shift and scale (eV), e.g. from ``fit_atomic_energies``."""
        ae = torch.as_tensor(atomic_energies, dtype=self.atomic_energies.dtype).reshape(-1)
        sc = torch.as_tensor(scale, dtype=self.scale.dtype).reshape(-1)
        if sc.numel() == 1:
            sc = sc.expand(len(self.species))
        if ae.numel() != len(self.species) or sc.numel() != len(self.species):
            raise ValueError(f"need one shift and one scale per species {self.species}")
        self.atomic_energies.copy_(ae)
        self.scale.copy_(sc)

    def forward(
        self, data: Dict[str, Tensor], compute_forces: bool = True, compute_stress: bool = False
    ) -> Dict[str, Tensor]:
        """Graph -> {"energy": (B,), "energies": (N,), "forces": (N, 3), "stress": (B, 3, 3),
        "virial": (B, 3, 3), "direct_forces": (N, 3) for force_head="both", and (N,) per
        property head}.

        Units eV, eV/Å, eV/Å^3; stress in ASE's sign (positive = tensile), zero for a
        structure with zero cell volume. ``virial`` = -dE/d(eps) in eV (what LAMMPS sums).
        If ``positions`` already requires grad, forces keep their graph (for Jacobians).
        """
        positions = data["positions"]
        species = data["species"]
        edge_index = data["edge_index"]
        shifts = data["shifts"]
        cell = data["cell"]
        batch = data["batch"]
        n_graphs = cell.shape[0]

        want_forces = compute_forces and self.conservative
        keep_graph = self.training or positions.requires_grad
        if want_forces and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        strain = torch.zeros((n_graphs, 3, 3), dtype=positions.dtype, device=positions.device)
        if compute_stress:
            strain.requires_grad_(True)
            sym = 0.5 * (strain + strain.transpose(1, 2))  # (B, 3, 3)
            pos = positions + torch.bmm(positions.unsqueeze(1), sym[batch]).squeeze(1)
            edge_sym = sym[batch[edge_index[0]]]  # (E, 3, 3)
            shifts = shifts + torch.bmm(shifts.unsqueeze(1), edge_sym).squeeze(1)
            cell = cell + torch.bmm(cell, sym)
        else:
            pos = positions
        edge_vec = pos[edge_index[1]] - pos[edge_index[0]] + shifts  # (E, 3)

        inputs: Dict[str, Tensor] = {}
        for key, value in data.items():
            inputs[key] = value
        inputs["positions"] = pos
        inputs["shifts"] = shifts
        inputs["cell"] = cell
        features = self.representation(inputs, edge_vec)  # see representation.py
        h = features["scalars"]  # (N, F)

        scale = self.scale[species]  # (N,)
        energies = self.energy_head(h).squeeze(-1) * scale + self.atomic_energies[species]  # (N,)
        # Summed in float64, returned in the model's dtype: a float32 sum over 1e5 atoms
        # drifts by ~1e2 eV, a float64 one by < 0.01 eV (benchmarks/results/speed.md).
        if "n_local" in data:
            n_local = int(data["n_local"].reshape(-1)[0])
            energy = scatter_sum(energies[:n_local].double(), batch[:n_local], n_graphs)
        else:
            energy = scatter_sum(energies.double(), batch, n_graphs)  # (B,)
        energy = energy.to(energies.dtype)
        out: Dict[str, Tensor] = {"energy": energy, "energies": energies}
        for prop, head in self.property_heads.items():
            out[prop] = head(h, species)  # (N,)

        direct: Optional[Tensor] = None
        vector_channel_head = self.vector_channel_head
        edge_vector_head = self.edge_vector_head
        if vector_channel_head is not None:
            direct = vector_channel_head(features["vectors"]) * scale.unsqueeze(-1)  # (N, 3)
        elif edge_vector_head is not None:
            direct = edge_vector_head(h, edge_index, edge_vec, scale)  # (N, 3)
        if direct is not None:
            if self.conservative:
                out["direct_forces"] = direct
            else:
                out["forces"] = direct

        if want_forces or compute_stress:
            wrt: List[Tensor] = []
            if want_forces:
                wrt.append(positions)
            if compute_stress:
                wrt.append(strain)
            grad_outputs: List[Optional[Tensor]] = [torch.ones_like(energy)]
            grads = torch.autograd.grad(
                [energy], wrt, grad_outputs=grad_outputs,
                retain_graph=keep_graph, create_graph=keep_graph, allow_unused=True,
            )
            k = 0
            if want_forces:
                g = grads[0]
                out["forces"] = -g if g is not None else torch.zeros_like(positions)
                k = 1
            if compute_stress:
                g = grads[k]
                dE_deps = g if g is not None else torch.zeros_like(strain)
                volume = torch.abs(torch.linalg.det(data["cell"]))  # (B,)
                safe = torch.where(volume > 0, volume, torch.ones_like(volume))
                stress = dE_deps / safe.view(-1, 1, 1)
                out["stress"] = torch.where(volume.view(-1, 1, 1) > 0, stress,
                                            torch.zeros_like(stress))
                out["virial"] = -dE_deps
        return out


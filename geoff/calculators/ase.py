"""GeoffCalculator: the ASE calculator around an EnergyModel (or a saved checkpoint).

It is the one calculator of geoff: scripts, the MD harness (``geoff.md``), the metrics and
the stability study all call it.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import (Calculator, PropertyNotImplementedError, all_changes,
                                       equal)
from ase.stress import full_3x3_to_voigt_6_stress

from ..captured_call import SUMMARY, captured_call
from ..compiled import compiled
from ..cuda_graphs import graphed
from ..graph import atoms_to_graph
from ..inference import force_key, frozen, torch_dtype, use_edge_pairs, use_radial_tables
from ..cpu_memory import keep_freed_memory
from ..potentials.autochunk import edge_chunking
from ..neighbours import NeighbourCache
from ..step_graph import StepGraph
from ..structure_checks import overlap_threshold
from ..to_device import to_host


AUTO_SKIN = 0.5  # Å: skin="auto" on CUDA
# skin_edges="auto": the whole Verlet list up to this many atoms on CUDA, unless the
# representation sets its own SKIN_KEEP_MAX_ATOMS. One H200, velocity Verlet, three rounds
# (benchmarks/results/eleventh_h200/md_step_crossover.md): keeping the list cuts the graph part
# of a step from 0.8-1.7 to 0.15-0.4 ms, and the model's 1.33x edges cost PaiNN as much at
# 1,372 atoms (step 0.99x) and more from 2,048 (1.13-1.17x); SchNet, cheaper per edge, gains
# up to 2,916 atoms (0.87-0.97x) and loses at 4,000 (1.04x).
AUTO_KEEP_MAX_ATOMS = 1_500
# Up to this size a Verlet list's staleness is decided on the host first (numpy, tens of µs),
# so that a new structure or a big move builds at once instead of first trying the old list
# on the device (a filtering pass and a synchronisation, wasted); beyond it that pass is
# cheap beside the model and the host's comparison is not.
HOST_STALE_CHECK_MAX_ATOMS = 20_000


def system_changes(old, new, tol: float = 1e-15, ignored=()) -> list:
    """What ASE's ``compare_atoms(old, new, tol, ignored)`` returns, cheaper: each property
    is first compared exactly (``np.array_equal``, microseconds) and only a property that
    differs goes through ASE's ``equal`` (``np.allclose`` at ``atol=tol``). ASE runs the
    allclose on every array for every ``get_forces``, three per velocity-Verlet step: ~0.4 ms
    a step at 864 atoms, as much as the rest of ASE's step and, on a GPU, a tenth of a small
    model's."""
    if old is None:
        return all_changes[:]
    check = set(all_changes) - set(ignored)
    changes = []

    def differs(a, b) -> bool:
        if np.array_equal(a, b):
            return False
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape \
                and a.dtype.kind in "fi" and b.dtype.kind in "fi":
            # np.allclose(a, b, rtol=0, atol=tol) without its generality (~3x faster); NaN
            # differs, as there; equal infinities amid other changes differ here (recompute)
            return not bool((np.abs(a - b) <= tol).all())
        return not equal(a, b, atol=tol)

    for prop in ("cell", "pbc"):
        if prop in check:
            check.discard(prop)
            if differs(getattr(old, prop), getattr(new, prop)):
                changes.append(prop)
    arrays_old, arrays_new = set(old.arrays), set(new.arrays)
    changes += check & (arrays_old ^ arrays_new)
    changes += [p for p in check & arrays_old & arrays_new
                if differs(old.arrays[p], new.arrays[p])]
    return changes


class GeoffCalculator(Calculator):
    """ASE calculator for geoff models.

    Args:
        model: an ``EnergyModel`` or the path of a checkpoint written by ``geoff.save``.
        device: ``"cpu"``, ``"cuda"``, ...
        dtype: ``"float32"`` (fast) or ``"float64"`` (what tests use).
        forces: which forces ``forces`` reports: ``"conservative"`` (-dE/dx) or ``"direct"``
            (the learned head). Default: the model's own head (conservative for
            ``force_head="conservative"`` and ``"both"``, direct for ``"direct"``).
        check_overlaps: raise a ``ValueError`` naming two atoms closer than the model's
            overlap threshold (``geoff.structure_checks``); ``False`` turns the check off.
        neighbour_list: ``"auto"`` (a torch cell list on CUDA, matscipy on the CPU),
            ``"matscipy"`` or ``"torch"`` (see ``geoff.graph.atoms_to_graph``).
        skin: Å; > 0 keeps a Verlet list built with ``cutoff + skin`` across calls
            (``geoff.neighbours.NeighbourCache``, same edges as a fresh build; for MD): it
            is rebuilt when an atom moved more than ``skin / 2`` or the cell changed.
            ``"auto"`` (default): 0.5 Å on CUDA with the torch cell list, where one H200
            measured an MD step (velocity Verlet, 300 K) at 0.73-0.92x the time of a fresh
            list per step (SchNet and PaiNN, 864-32k Cu atoms, two runs); 0 on the CPU
            (matscipy, whose build is cheap there against the model).
        skin_edges: with a skin, ``"filter"`` re-filters the Verlet list by the cutoff every
            call; ``"keep"`` hands the model the whole list, whose edges beyond the cutoff
            every geoff model's envelope zeroes exactly (same results): ~1.33x the edges at
            0.5 / 5 Å, but the Graph stays on the device between steps
            (``geoff.step_graph``): a step uploads the positions and nothing else, decides
            on the host whether the list still holds, and checks overlaps only when one is
            within reach, so it waits for the device once, for the results. ``"auto"``
            (default): keep on CUDA up to ``AUTO_KEEP_MAX_ATOMS`` (1,500) atoms (SchNet:
            3,000, its ``SKIN_KEEP_MAX_ATOMS``), below which one H200 measured the whole
            step at or under the filtered one; filter above that and on the CPU.
        edge_chunk: edges per checkpointed chunk (``geoff.potentials.chunking``): larger
            systems keep no per-edge activations for the backward pass (memory per atom ~20x
            lower for MACE-style, messages computed twice). ``"auto"`` (default): no
            chunking when the graph fits in the free GPU memory (CPU: half the available
            RAM), else the largest chunk that fits (memory per edge measured once per
            calculator; CUDA out-of-memory calls are retried in smaller chunks;
            ``geoff.potentials.autochunk``); an int: that many edges; 0 = never; None = the
            model's default (``DEFAULT_EDGE_CHUNK``). Results equal to float round-off.
        cuda_graphs: ``"auto"`` (default), ``True`` or ``False``: on CUDA, replay captured
            CUDA graphs with shapes padded to buckets (``geoff.cuda_graphs``,
            ``geoff.captured_call``), so that a call stops paying one launch per kernel and
            the neighbour search's host synchronisations. ``"auto"``: a molecule or fully
            periodic cell of up to 3,000 atoms (SchNet: 10,000, its ``CAPTURE_MAX_ATOMS``)
            has its neighbour search and model captured as one graph, larger ones (to
            50,000) the search alone (the model then runs eagerly on the exact Graph);
            slabs and wires have the model captured up to 1,500 atoms
            (``geoff.cuda_graphs.DEFAULT_MAX_ATOMS``). A shape is captured on its second
            call, so a loop over structures of many sizes runs eagerly and MD replays from
            its second step. ``True``: from the first call, search and model to 10,000
            atoms and the model at any size. ``False``: eager. The CPU, refused models
            (DimeNet++, GemNet, FAENet) and failed captures run eagerly (a failed capture
            warns once). One H200, a call on a new structure, ``False`` -> ``"auto"``:
            SchNet 8.6-10.0 -> 2.6-2.7 ms at 864 atoms, 10.8-13.8 -> 5.6-5.8 at 2,916;
            PaiNN 11.5-19.1 -> 5.5-6.1, 17.5-23.6 -> 13.8-14.2, 40.4-44.1 -> 36.8-38.6 at
            8,788. A captured graph keeps its activations in a pool
            shared by the calculator's graphs; a capture that would take more than 80 % of
            the free GPU memory is not made. Results equal the eager ones to float round-off.
        kernels: ``"e3nn"`` (default), ``"cueq"`` or ``"auto"``: NequIP-style and MACE-style
            tensor products through NVIDIA cuEquivariance's fused kernels
            (``geoff.potentials.cueq``; ``pip install geoff[cuda]`` plus the ops wheel for
            your CUDA), same weights, results equal to float round-off. ``"auto"``: cuEq when
            it is installed and the device is CUDA. ``"cueq"`` without it raises.
        compile: ``True`` runs the model through ``torch.compile`` (``geoff.compiled``:
            Inductor kernels, dynamic shapes, one compilation of tens of seconds on the first
            call); results equal the eager ones to float round-off. Combines with
            ``cuda_graphs`` (the compiled model is captured). Sizes on the chunked path
            (``edge_chunk``) and DimeNet++, GemNet, FAENet run eagerly.
        edge_pairs: ``"auto"`` (default), ``True`` or ``False``: graphs with edge pairs
            (``geoff.graph.add_edge_pairs``), so that SchNet's and PaiNN's filters, the
            NequIP- and MACE-style radial MLPs and the envelopes run once per pair of reverse
            edges instead of once per edge. Same results to round-off. ``"auto"``: on the
            CPU for models whose message layers use them, and on CUDA for the cuEq kernels
            (the kernel reads each edge's weights from its pair's row). Measured: 2-core CPU,
            256 Cu atoms, model time 0.56-0.72 (SchNet), 0.90-1.02 (PaiNN), 0.87-0.94
            (NequIP-style), 0.88-0.99 (MACE-style) of the per-edge path; one H200,
            MACE-style + cuEq at 32k / 131k atoms 0.85-0.87 of it, at 0.54x the memory.
            The e3nn path on CUDA was not measured with pairs and keeps the per-edge path.
        radial_table: ``"auto"`` (default), ``True`` or ``False``: read the distance-only
            networks (SchNet's filters times the envelope, the NequIP- and MACE-style radial
            MLPs) from cubic Hermite tables of the distance (``geoff.potentials.radial_table``),
            sampled once from the frozen weights: four coefficients per edge instead of the
            MLP and its backward pass. In float32 SchNet's forces are closer to the float64
            networks than the float32 networks' own; in float64 they agree to ~1e-8
            relative. ``"auto"``: in float32 on the device types where each representation
            measured a gain (``RADIAL_TABLE_AUTO``): SchNet on the CPU (0.81-0.84x the model
            time at 256-864 atoms, 2 cores), NequIP- and MACE-style on CUDA (0.93x and
            0.83-0.87x on one H200 with cuEq + compile); off elsewhere and in float64.
            ``True`` on a model without tables raises.

    Properties: ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å, (N, 3)), ``stress``
    (eV/Å^3, Voigt order xx yy zz yz xz xy, 3D-periodic cells only), ``energies`` (eV per
    atom, (N,)) and, for models with a direct head, ``direct_forces`` (eV/Å, (N, 3)).

    Each call pays only for what is asked: for a model with a direct head the backward pass
    runs only when conservative ``forces`` are asked for, so ``energy`` or ``direct_forces``
    alone cost one forward pass (what multiple time stepping needs); a conservative-only model
    computes its forces with its energy. Results are recomputed only when the atoms change
    (ASE's ``check_state``).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies",
                              "direct_forces"]

    def __init__(self, model, device: str = "cpu", dtype: str = "float32",
                 forces: Optional[str] = None, check_overlaps: bool = True,
                 neighbour_list: str = "auto", skin: Union[float, str] = "auto",
                 edge_chunk: Union[int, str, None] = "auto", cuda_graphs="auto",
                 kernels: str = "e3nn", compile: bool = False, edge_pairs="auto",
                 radial_table="auto", skin_edges: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.min_distance = None if check_overlaps else 0.0  # None: the model's threshold
        if not isinstance(model, torch.nn.Module):
            from ..checkpoint import load

            model = load(model)
        if forces is None:
            forces = "direct" if model.force_head == "direct" else "conservative"
        self.force_key = force_key(model.force_head, forces)
        self.device = torch.device(device)
        self.dtype = torch_dtype(dtype)
        if self.device.type == "cpu":  # reuse freed memory between calls (geoff.cpu_memory)
            keep_freed_memory()
        self.model = frozen(model, self.device, self.dtype)
        self.radial_table = use_radial_tables(self.model, radial_table, self.device, self.dtype)
        if kernels != "e3nn":  # on the frozen copy, in its final device and dtype
            from ..potentials.cueq import with_kernels

            with_kernels(self.model, kernels, self.device)
        # the model itself, or compiled, or captured in CUDA graphs, or both
        model_fn = compiled(self.model, compile)
        self.run_model = graphed(model_fn, cuda_graphs, self.device)
        # "auto": the chunk chosen per call from the free GPU memory, around run_model
        self.auto_chunk = edge_chunking(self.model, edge_chunk, self._run)
        # on CUDA: the neighbour search captured with the model (asking auto_chunk once per
        # bucket whether its graph fits unchunked)
        self.captured_call = captured_call(
            model_fn, cuda_graphs, self.device, self.dtype, self.min_distance,
            plan=self.auto_chunk.chunk_for if self.auto_chunk is not None else None,
            captures=getattr(self.run_model, "captures", None), eager=self._call_model,
            auto_max_atoms=getattr(self.model.representation, "CAPTURE_MAX_ATOMS", None))
        self.edge_pairs = use_edge_pairs(self.model, edge_pairs, self.device)  # after kernels
        if skin == "auto":
            skin = AUTO_SKIN if self.device.type == "cuda" and neighbour_list in (
                "auto", "torch") else 0.0
        if isinstance(skin, str):
            raise ValueError(f"skin must be a distance in Å or 'auto', got {skin!r}")
        if skin_edges not in ("auto", "filter", "keep"):
            raise ValueError(f"skin_edges must be 'auto', 'filter' or 'keep', got {skin_edges!r}")
        if skin_edges == "keep" and not skin > 0:
            raise ValueError("skin_edges='keep' hands the model a Verlet list, which needs a "
                             f"skin: set skin > 0 Å (e.g. skin=0.5), got skin={skin!r}")
        if skin_edges == "auto":  # the CPU filters (its model time grows with the edges)
            skin_edges = "auto" if self.device.type == "cuda" else "filter"
        self.skin_edges = skin_edges
        self.neighbour_cache = NeighbourCache(skin, filter_edges=skin_edges != "keep") \
            if skin > 0 else None
        self.neighbour_list = self.neighbour_cache or neighbour_list
        # a whole Verlet list keeps its edges: the Graph stays on the device between steps
        self.step_graph = None
        if self.neighbour_cache is not None and skin_edges != "filter":
            threshold = overlap_threshold(self.model) if self.min_distance is None \
                else self.min_distance
            self.step_graph = StepGraph(self.neighbour_cache, self.graph, self.model.cutoff,
                                        threshold, self.dtype, self.device)

    def check_state(self, atoms, tol=1e-15):
        return system_changes(self.atoms, atoms, tol, self.ignored_changes)

    def _run(self, graph, **kwargs):
        return self.run_model(graph, **kwargs)  # looked up per call: run_model may be swapped

    def _call_model(self, graph, **kwargs):
        """The model on a Graph as a call runs it: chunked as ``edge_chunk`` says, captured
        as ``run_model`` does."""
        return (self.auto_chunk or self.run_model)(graph, **kwargs)

    @property
    def species(self):
        return self.model.species

    def graph(self, atoms):
        cache = self.neighbour_cache
        if cache is not None and len(atoms) <= HOST_STALE_CHECK_MAX_ATOMS and \
                cache.reuse_displacement(atoms.positions, atoms.cell.array, atoms.pbc,
                                         self.model.cutoff) is None:
            cache.expire()
        # edge pairs: the models' distance-only terms once per pair of reverse edges
        return atoms_to_graph(atoms, self.model, dtype=self.dtype, device=self.device,
                              min_distance=self.min_distance,
                              neighbour_list=self.neighbour_list, edge_pairs=self.edge_pairs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties
        if want_stress and not np.all(atoms.pbc):
            raise PropertyNotImplementedError(
                f"stress needs a 3D-periodic cell, but pbc = {atoms.pbc.tolist()}; "
                "set pbc=True with a cell, or ask only for energy and forces"
            )
        # A conservative-only model computes its forces with every call (ASE asks for the
        # energy, then the forces: one pass serves both); a model with a direct head runs the
        # backward pass only when its conservative forces are asked for.
        backward = self.force_key == "forces" and (
            "forces" in properties or self.model.force_head == "conservative")
        if self.skin_edges == "auto" and self.neighbour_cache is not None:
            limit = getattr(self.model.representation, "SKIN_KEEP_MAX_ATOMS", None) \
                or AUTO_KEEP_MAX_ATOMS
            self.neighbour_cache.filter_edges = len(atoms) > limit
        pending = None
        captured = self.captured_call
        out = captured(atoms, compute_forces=backward, compute_stress=want_stress) \
            if captured is not None else None
        if out is None:
            graph, pending = self.step_graph(atoms) if self.step_graph \
                else (self.graph(atoms), None)
            out = self._call_model(graph, compute_forces=backward, compute_stress=want_stress)
        wanted = {"energy": out["energy"].detach().sum().reshape(1), "energies": out["energies"]}
        for name in getattr(self.model, "properties", ()):  # per-atom property heads (N,)
            wanted[name] = out[name]
        direct = force_key(self.model.force_head, "direct") \
            if self.model.force_head != "conservative" else None
        if direct is not None:
            wanted["direct_forces"] = out[direct]
        if self.force_key in out and (backward or self.force_key == direct):
            wanted["forces"] = out[self.force_key]
        if want_stress:
            wanted["stress"] = out["stress"][0]
        if pending is not None:  # the overlap check of a kept Graph, read with the results
            wanted["shortest_edge"] = pending
        if SUMMARY in out:  # the captured search's edge count and shortest edge, likewise
            wanted[SUMMARY] = out[SUMMARY]
        results = to_host(wanted)
        if pending is not None:
            self.step_graph.check(results.pop("shortest_edge"), atoms)
        if SUMMARY in results and not captured.check(results.pop(SUMMARY), atoms):
            # more edges than the bucket held: void; its shape has a larger capacity now
            return self.calculate(atoms, properties, system_changes)
        self.results["energy"] = self.results["free_energy"] = float(results.pop("energy")[0])
        if want_stress:
            results["stress"] = full_3x3_to_voigt_6_stress(results["stress"])
        self.results.update(results)

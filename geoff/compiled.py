"""Energy, forces and stress of an EnergyModel through ``torch.compile`` (inference only).

``CompiledModel(model)`` is called as the model is, ``(graph, compute_forces,
compute_stress) -> outputs``, and returns the same outputs to float round-off. Inductor fuses
the per-edge gather * filter -> index_add chains and the elementwise ops into C++/OpenMP
loops on the CPU and Triton kernels on CUDA.

How the autograd forces survive compilation (``EnergyModel.forward`` is not touched):
TorchDynamo splits the forward at ``torch.autograd.grad`` (and at the two ``requires_grad_``
calls before it) into up to four graphs. The large one, graph -> energy, is compiled with
AOTAutograd, which compiles its backward as well; ``torch.autograd.grad`` then runs outside
the compiled regions and calls that compiled backward. The others are a few elementwise ops.

Shapes: atoms and edges change from structure to structure and the edges every MD step. The
model is compiled with dynamic shapes (``dynamic=True``): one compilation serves every edge
count (10 MD steps of a SchNet: no recompilation), with a graph more when a guard of the
dynamic graph fails (NequIP- and MACE-style: one more from 256 to 864 atoms, op not traced).
``stats["graphs"]`` counts the graphs the backend compiled (3 for energy + forces, 4 with
stress: the ``requires_grad_`` and ``autograd.grad`` splits), so a test can bound the
recompilations of an MD run. Sizes on the chunked path (``edge_chunk``) run eagerly
(``stats["eager"]``): their chunk bounds are host data, a new graph every call.

What is refused, with the reason (``ValueError``): training mode (the trainer needs
``create_graph=True``: AOTAutograd's compiled backward is not differentiable twice), and
positions that already require grad (a caller's own autograd graph, e.g. a Jacobian, makes
the model keep its graph with ``create_graph=True`` for the same reason).

The compile cost is paid on the first call of each new shape class (seconds to minutes on
the CPU; see the README's Speed section for what it buys per model).
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from .cuda_graphs import refusal, takes_chunked_path
from .graph import EDGE_INDEX, POSITIONS, Graph

DYNAMO_CONFIG = dict(
    # Python floats (the envelope's exponent, cutoffs) as constants: traced as symbolic floats,
    # torch.pow(x, p) fails to lower in Inductor (torch 2.13: KeyError 'unbacked_bindings')
    specialize_float=True,
    # every CompiledModel has its own backend, hence its own cache entries on the same code
    # (EnergyModel.forward): the default 8 is reached by a few models in one process
    recompile_limit=64,
)
# backed_size_oblivious (set around each call): a size of 1 (one structure) stays symbolic.
# Specialised to 1, Inductor's vectorised C++ scatter-add into the (1,) energy asserts
# (torch 2.13, cpp.py: "assert isinstance(index, CppCSEVariable) and index.is_vec").


def _refusal_in_training(model: nn.Module) -> Optional[str]:
    if model.training:
        return ("compile is for inference: the model is in training mode, whose forces need "
                "create_graph=True (not supported by the compiled backward); call model.eval() "
                "or use geoff.inference.frozen(model)")
    return None


class CompiledModel(nn.Module):
    """``model(graph, compute_forces, compute_stress)`` through ``torch.compile``.

    Args:
        model: an ``EnergyModel`` in eval mode (e.g. ``geoff.inference.frozen``).
        dynamic: dynamic shapes (True: one compilation for every atom and edge count).
        mode: Inductor's mode (None, ``"max-autotune-no-cudagraphs"``, ...).

    Attributes not defined here (``cutoff``, ``species``, ``representation``, ...) are the
    wrapped model's, so ``CompiledModel`` goes where an ``EnergyModel`` goes (e.g. inside
    ``geoff.cuda_graphs.GraphedModel``). ``stats``: ``calls`` and ``graphs`` (compiled).
    """

    def __init__(self, model: nn.Module, dynamic: bool = True, mode: Optional[str] = None):
        super().__init__()
        reason = _refusal_in_training(model)
        if reason is not None:
            raise ValueError(reason)
        self.training = False  # nn.Module starts in training mode; this wrapper never trains
        self.model = model
        self.stats = {"calls": 0, "graphs": 0, "eager": 0}
        options = torch._inductor.list_mode_options(mode) if mode else {}

        def backend(gm, example_inputs):  # Inductor, counting what it compiles
            from torch._inductor.compile_fx import compile_fx

            self.stats["graphs"] += 1
            return compile_fx(gm, example_inputs, config_patches=options)

        self._compiled = torch.compile(model, backend=backend, dynamic=dynamic)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def train(self, mode: bool = True):
        if mode:
            raise ValueError(_refusal_in_training(nn.Module().train()))
        return super().train(False)

    def forward(self, graph: Graph, compute_forces: bool = True,
                compute_stress: bool = False) -> Dict[str, Tensor]:
        """The model's outputs (see ``EnergyModel.forward``)."""
        if graph[POSITIONS].requires_grad:
            raise ValueError("compile is for inference: positions that require grad make the "
                             "model differentiate its forces again (create_graph=True), which "
                             "the compiled backward cannot; call the eager model for that")
        n_atoms, n_edges = graph[POSITIONS].shape[0], graph[EDGE_INDEX].shape[1]
        if takes_chunked_path(self.model, n_atoms, n_edges):
            # its chunk bounds are read back to the host: a new graph every call
            self.stats["eager"] += 1
            return self.model(graph, compute_forces=compute_forces,
                              compute_stress=compute_stress)
        self.stats["calls"] += 1
        before = self.stats["graphs"]
        with torch._dynamo.config.patch(**DYNAMO_CONFIG), \
                torch.fx.experimental._config.patch(backed_size_oblivious=True):
            out = self._compiled(graph, compute_forces=compute_forces,
                                 compute_stress=compute_stress)
        if self.stats["calls"] == 1 and self.stats["graphs"] == before:
            warnings.warn("torch.compile compiled nothing on the first call (its recompile "
                          "limit was reached in this process?): the model ran eagerly",
                          RuntimeWarning, stacklevel=2)
        return out


def compiled(model: nn.Module, compile: bool) -> nn.Module:
    """``model`` or a ``CompiledModel`` around it, for ``GeoffCalculator(compile=...)``.

    Models whose shapes depend on the data (``geoff.cuda_graphs.REFUSED``: triplets built
    inside the model, PCA frames) would recompile at every step: they run eagerly, with a
    warning.
    """
    if compile not in (True, False):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    if not compile:
        return model
    reason = refusal(model)
    if reason is not None and not model.training:
        warnings.warn(f"compile=True: this model runs eagerly ({reason})", RuntimeWarning,
                      stacklevel=3)
        return model
    return CompiledModel(model)

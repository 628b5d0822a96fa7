"""nequip 0.19.1 at geoff's matched NequIP hyper-parameters (``nequip_package.MATCHED``: 64
features, l_max 2, 3 layers, cutoff 5 Å, 8 Bessel functions), random weights (``seed=0``).

``spec["compile"]``:

- ``"eager"``: ``NequIPGNNModel(seed=0, ...)`` built in process, run eagerly.
- ``"aotinductor"``: nequip at its fastest, the way its docs deploy a model: the package
  of ``nequip_package`` (built on first use), ``nequip-compile --mode aotinductor --target
  ase-forces`` (nequip's ``ase`` target without stress, ``nequip_package.FORCES_TARGET``)
  for ``spec["device"]`` with ``spec["modifiers"]`` (e.g. ``["enable_CuEquivariance"]``,
  its cuEquivariance tensor-product kernels; CUDA only), loaded by
  ``NequIPCalculator.from_compiled_model`` for that target. Compiled once per dtype, device and modifiers
  (cached next to the package); the row's ``compile_s`` is what that compile took.

(nequip's ``compile_mode="compile"``, its train-time torch.compile, runs the eager model for
a batch of fewer than 2 frames, i.e. for every single structure here: not a row.)
``spec["hyper"]`` overrides the hyper-parameters (tests: a tiny model). Neighbour list:
nequip's ``NeighborListTransform`` (matscipy backend, its default) in both modes, as
``NequIPCalculator`` builds it.
"""
from __future__ import annotations

MODES = ("eager", "aotinductor")


def check_spec(spec: dict) -> dict:
    """The spec's nequip options, checked: ``compile`` in MODES, ``modifiers`` only with
    ``aotinductor``; returns ``{"compile", "modifiers", "hyper"}``."""
    mode = spec.get("compile", "eager")
    if mode not in MODES:
        raise ValueError(f"nequip_peer: compile={mode!r} is not one of {MODES}; "
                         "'compile' (train-time torch.compile) runs eager on one frame")
    modifiers = list(spec.get("modifiers", []))
    if modifiers and mode != "aotinductor":
        raise ValueError("nequip_peer: modifiers apply at nequip-compile time; set "
                         "compile='aotinductor' to use " + ", ".join(modifiers))
    return {"compile": mode, "modifiers": modifiers, "hyper": dict(spec.get("hyper", {}))}


def _eager_calculator(spec: dict, hyper: dict):
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.integrations.ase import NequIPCalculator
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    from nequip_package import MATCHED, TYPE_NAMES

    set_global_state()  # nequip's defaults (TF32 off), required before building a model
    hyper = dict(MATCHED, **hyper)
    model = NequIPGNNModel(seed=0, model_dtype=spec["dtype"], type_names=TYPE_NAMES,
                           per_type_energy_scales=1.0, per_type_energy_shifts=0.0, **hyper)
    model.eval()
    transforms = [ChemicalSpeciesToAtomTypeMapper(
                      model_type_names=TYPE_NAMES,
                      chemical_species_to_atom_type_map={s: s for s in TYPE_NAMES}),
                  NeighborListTransform(r_max=hyper["r_max"])]
    return NequIPCalculator(model, device=spec["device"], transforms=transforms)


def _compiled_calculator(spec: dict, options: dict) -> tuple:
    """(NequIPCalculator on the AOTInductor model, compile seconds)."""
    from nequip.integrations.ase import NequIPCalculator
    from nequip.utils.global_state import set_global_state

    from nequip_package import build_package, compile_aot, forces_target

    class ForcesCalculator(NequIPCalculator):
        """Loads the ``ase-forces`` model: energies and forces, no stress."""

        @classmethod
        def _get_aoti_compile_target(cls):
            return forces_target()

    set_global_state()
    package = build_package(spec["dtype"], options["hyper"])
    path, seconds = compile_aot(package, spec["device"], options["modifiers"])
    calc = ForcesCalculator.from_compiled_model(str(path), device=spec["device"],
                                               chemical_species_to_atom_type_map=True)
    return calc, seconds


CHECK_MAX_ATOMS = 32_000  # the AOTInductor model is checked against eager nequip up to here


def _check_against_eager(calc, spec: dict, options: dict, atoms) -> float:
    """max |F_aot - F_eager| (eV/Å) on ``atoms``: the compiled model against nequip's eager
    model from the same package. nequip-compile makes this check itself unless
    ``NEQUIP_SKIP_AOTI_MODEL_CHECK`` is set (a torch whose AOTInductor loader crashes in the
    compiling process can still load the model in a fresh one), so the row keeps it."""
    from nequip.integrations.ase import NequIPCalculator

    from nequip_package import build_package

    eager = NequIPCalculator._from_saved_model(
        str(build_package(spec["dtype"], options["hyper"])), device=spec["device"],
        chemical_species_to_atom_type_map=True)
    forces = []
    for c in (calc, eager):
        c.calculate(atoms, ["energy", "forces"], ["positions"])
        forces.append(c.results["forces"])
    return float(abs(forces[0] - forces[1]).max())


def prepare(spec: dict):
    """(model call on a prepared graph, NequIPCalculator call, atoms, edges[, extra row
    fields]): the extra ``compile_s`` for the AOTInductor model, and ``max_dF_vs_eager``
    (eV/Å) up to ``CHECK_MAX_ATOMS``."""
    from nequip.data import AtomicDataDict

    from speed import structure

    options = check_spec(spec)
    extra = {}
    if options["compile"] == "aotinductor":
        calc, extra["compile_s"] = _compiled_calculator(spec, options)
    else:
        calc = _eager_calculator(spec, options["hyper"])
    atoms = structure(spec["kind"], spec["n"])
    if options["compile"] == "aotinductor" and len(atoms) <= CHECK_MAX_ATOMS:
        extra["max_dF_vs_eager"] = _check_against_eager(calc, spec, options, atoms)
    graph = calc.atoms_to_data(atoms)

    def model_call():
        calc.model(dict(graph))[AtomicDataDict.FORCE_KEY].sum().item()

    def calc_call():
        calc.calculate(atoms, ["energy", "forces"], ["positions"])

    edges = int(graph[AtomicDataDict.EDGE_INDEX_KEY].shape[1])
    return model_call, calc_call, len(atoms), edges, extra

"""Time one peer at one size, in its own process: ``python runner.py '<json spec>'``.

Run with the peer's ``pip --target`` folder first on ``PYTHONPATH`` (so it sees its own
e3nn, never geoff's) and ``benchmarks/`` after it (for ``speed.structure``). Prints one JSON
row: ``atoms``, ``edges``, ``model_s`` / ``calc_s`` (medians, s), ``mem_bytes`` (GPU:
``max_memory_allocated`` over the first model call minus what was allocated before; CPU:
peak RSS growth, an upper bound).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import sys
import types

# Imported at module level by mace's plotting CLI only, never on the timed path; left out of
# its folder to fit the device's carry (pandas alone is 12 MB). Only mace_peer stubs them:
# a placeholder would make other packages (lightning) believe pandas is installed.
OPTIONAL_IMPORTS = ("pandas", "matplotlib", "matplotlib.pyplot")


def _placeholder(name: str) -> types.ModuleType:
    """A module whose attributes are classes that raise when used (annotations such as
    ``pd.DataFrame`` in a signature still import)."""
    module = types.ModuleType(name)

    def attribute(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def missing(*args, **kwargs):
            raise ImportError(f"{name} is not installed in this peer folder (not needed to "
                              f"time the model); install it there to use {name}.{attr}")

        return type(attr, (), {"__new__": missing, "__getattr__": missing})

    module.__getattr__ = attribute
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec() reads it
    module.__path__ = []  # a package, so that submodules can be placeholders too
    return module


def stub_missing(names=OPTIONAL_IMPORTS) -> list:
    """Put a placeholder in ``sys.modules`` for each of ``names`` that is not installed."""
    stubbed = []
    for name in names:
        top = name.split(".")[0]
        if top in stubbed or importlib.util.find_spec(top) is None:
            sys.modules[name] = _placeholder(name)
            stubbed.append(name)
    return stubbed


def measure(prepare, spec: dict) -> dict:
    """``prepare(spec)`` returns (model_call, calc_call, n_atoms, n_edges[, extra]); time
    both. ``extra``: more fields for the row (e.g. ``compile_s``, seconds)."""
    import torch

    from speed import _median_time, first_call_memory

    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    model_call, calc_call, n_atoms, n_edges, *extra = prepare(spec)
    row = {"atoms": n_atoms, "edges": n_edges, **(extra[0] if extra else {})}
    row.update(first_call_memory(model_call, dev))
    row["model_s"] = _median_time(model_call, dev, spec["repeats"], spec["budget"])
    row["calc_s"] = (_median_time(calc_call, dev, spec["repeats"], spec["budget"])
                     if spec.get("calc", True) else float("nan"))
    return row


def main(spec: dict) -> dict:
    module = importlib.import_module(spec["module"])  # e.g. mace_peer, next to this file
    return measure(module.prepare, spec)


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))

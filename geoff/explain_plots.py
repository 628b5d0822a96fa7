"""Pictures of explanations (matplotlib, Agg): one atom's neighbourhood, and global bars."""
from __future__ import annotations

from typing import Dict

import numpy as np

COLOURS = {"Cu": "#c8702a", "Zr": "#3a6fb0"}


def plot_neighbourhood(atoms, explanation, path, max_edges: int = 60) -> None:
    """The explained atom and the atoms its strongest edges join, projected on the two main
    axes of those positions; edges coloured (and widened) by importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = atoms.positions[explanation.atom]
    edges = explanation.edges[:max_edges]
    # Unwrapped around the centre: a receiver at its minimum image, the sender at receiver +
    # the edge vector; every periodic image drawn where an edge ends.
    points: Dict[tuple, tuple] = {(explanation.atom,) + (0.0, 0.0, 0.0): (explanation.atom,
                                                                          centre)}
    segments = []
    for e in edges:
        i, j = e["receiver"], e["sender"]
        xi = centre + _mic(atoms, explanation.atom, i)
        xj = xi + _mic(atoms, i, j, e["shift"])
        for k, x in ((i, xi), (j, xj)):
            points.setdefault((k,) + tuple(np.round(x - centre, 3)), (k, x))
        segments.append((xi, xj, e["importance"]))
    xyz = np.array([x for _, x in points.values()])
    axes = np.linalg.svd(xyz - xyz.mean(0), full_matrices=False)[2][:2]  # (2, 3)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("viridis")
    for xi, xj, w in sorted(segments, key=lambda s: s[2]):
        a, b = (xi - centre) @ axes.T, (xj - centre) @ axes.T
        ax.plot([a[0], b[0]], [a[1], b[1]], color=cmap(w), lw=0.5 + 3 * w, alpha=0.4 + 0.6 * w)
    for k, x in points.values():
        p = (x - centre) @ axes.T
        ax.scatter(*p, s=220 if k == explanation.atom and np.allclose(x, centre) else 90,
                   c=COLOURS.get(atoms[k].symbol, "grey"), edgecolors="k", zorder=3)
        ax.annotate(str(k), p, fontsize=6, ha="center", va="center", zorder=4, color="w")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax, label="edge importance (mask)")
    ax.set_aspect("equal")
    ax.set_xlabel("Å (main axis 1)")
    ax.set_ylabel("Å (main axis 2)")
    ax.set_title(f"atom {explanation.atom} ({atoms[explanation.atom].symbol}): "
                 f"{explanation.output} = {explanation.prediction:.3f}\n"
                 f"Cu orange, Zr blue; top {len(edges)} edges", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _mic(atoms, i: int, j: int, shift=None) -> np.ndarray:
    """Vector from atom i to atom j (with the edge's shift if given, else minimum image)."""
    if shift is not None:
        return atoms.positions[j] - atoms.positions[i] + np.asarray(shift)
    if i == j:
        return np.zeros(3)
    return atoms.get_distance(i, j, mic=True, vector=True)


def plot_global(table: Dict[str, Dict], path) -> None:
    """Grouped bars: mean importance per pair type (groups) and distance shell (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(table)
    shells = []
    for row in table.values():
        shells += [k for k in row if k != "_count" and k not in shells]
    width = 0.8 / max(len(shells), 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s, shell in enumerate(shells):
        values = [table[p].get(shell, np.nan) for p in pairs]
        ax.bar(np.arange(len(pairs)) + s * width, values, width, label=f"{shell} Å")
    ax.set_xticks(np.arange(len(pairs)) + 0.4 - width / 2)
    ax.set_xticklabels(pairs)
    ax.set_ylabel("mean edge importance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)

"""Statistics, histogram and merging of ``cuzr-barriers`` glasses.

``merge(glass_files, out)`` joins per-glass files (``glass_NNN.extxyz`` with their
provenance JSON, as ``cuzr_barriers.generate(glass_dir=...)`` writes them) into one extxyz,
its provenance with the statistics, and the barrier histogram PNG next to it.

    python -m geoff.data.barrier_merge OUT.extxyz GLASS.extxyz [GLASS.extxyz ...]
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

# Attempts that reached a saddle (converged below fmax), whatever happened after.
CONVERGED = ("accepted", "not_centred", "not_first_order", "no_barrier", "no_event")


def statistics(frames, records: Sequence[Dict]) -> Dict:
    """Counts and fractions over attempt records (``outcomes``, ``force_calls``,
    ``seconds`` per atom) and the labelled atoms of ``frames``."""
    outcomes: Dict[str, int] = {}
    for rec in records:
        for status in rec["outcomes"]:
            outcomes[status] = outcomes.get(status, 0) + 1
    total = max(sum(outcomes.values()), 1)
    labels = [f.arrays["barrier_mean"] for f in frames]
    values = np.concatenate(labels) if labels else np.zeros(0)
    values = values[np.isfinite(values)]
    events = np.asarray([b for rec in records for b in rec["barriers"]], dtype=float)
    describe = (lambda v: {"n": int(v.size), "mean": float(v.mean()), "min": float(v.min()),
                           "median": float(np.median(v)), "max": float(v.max())}
                if v.size else {"n": 0})
    return {
        "attempts": sum(outcomes.values()),
        "attempt_outcomes": dict(sorted(outcomes.items())),
        "converged_fraction": sum(outcomes.get(k, 0) for k in CONVERGED) / total,
        "accepted_fraction": outcomes.get("accepted", 0) / total,
        "labelled_atoms": int(values.size),
        "labelled_atoms_per_glass": [int(np.isfinite(x).sum()) for x in labels],
        "force_calls_per_attempt": sum(r["force_calls"] for r in records) / total,
        "seconds_per_attempt": sum(r["seconds"] for r in records) / total,
        "barrier_mean_eV": describe(values),
        "event_barriers_eV": describe(events),
    }


def histogram(frames, path) -> Path:
    """PNG histogram of the per-atom mean and min barriers (eV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    values = {}
    for key in ("barrier_mean", "barrier_min"):
        v = np.concatenate([f.arrays[key] for f in frames])
        values[key] = v[np.isfinite(v)]
    top = max((v.max() for v in values.values() if v.size), default=1.0)
    bins = np.linspace(0.0, top, 41)  # shared, so the two histograms compare bin by bin
    for key, v in values.items():
        if v.size:
            ax.hist(v, bins=bins, alpha=0.6, label=f"{key} ({v.size} atoms)")
    ax.set_xlabel("barrier (eV)")
    ax.set_ylabel("atoms")
    ax.set_title(f"Cu64Zr36, {len(frames)} glasses")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def histogram_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.stem + "_hist.png")


def after_write(path, frames, provenance) -> None:
    """Called by ``geoff.data.generate`` after writing the data: the histogram."""
    if frames:
        _try_histogram(frames, path)


def _try_histogram(frames, out) -> None:
    try:
        histogram(frames, histogram_path(out))
    except ImportError as err:  # e.g. a machine without matplotlib: the data still counts
        print(f"no histogram ({err}); rerun `python -m geoff.data.barrier_merge` elsewhere")


def merge(glass_files: Sequence, out) -> Dict:
    """Join per-glass files into ``out`` (+ provenance with statistics + histogram)."""
    from .io import read_dataset, read_provenance, write_dataset, write_provenance

    frames, records, per_glass = [], [], {}
    for path in sorted(glass_files):
        (frame,) = read_dataset(path)
        prov = read_provenance(path)
        frames.append(frame)
        records += prov["atoms"]
        per_glass[str(frame.info["glass"])] = prov["glass_seconds"]
    if not frames:
        raise FileNotFoundError("no glass files to merge; run `geoff data cuzr-barriers` first")
    settings = read_provenance(sorted(glass_files)[0])["art"]
    provenance = {"generator": "cuzr-barriers", "merged_from": [str(p) for p in
                                                                 sorted(glass_files)],
                  "n_frames": len(frames), "art": settings, **statistics(frames, records),
                  "seconds_per_glass": per_glass}
    write_dataset(frames, out)
    write_provenance(out, provenance)
    _try_histogram(frames, out)
    return provenance


def main(argv: List[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    prov = merge(argv[1:], argv[0])
    print(f"{argv[0]}: {prov['n_frames']} glasses, {prov['labelled_atoms']} labelled atoms, "
          f"accepted {prov['accepted_fraction']:.2f}, converged {prov['converged_fraction']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

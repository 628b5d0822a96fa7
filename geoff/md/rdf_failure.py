"""Time to failure of a liquid by its structure (Fu et al., TMLR 2023): the trajectory is cut
into windows of ``window_ps``; the run fails at the end of the first window whose RDF error
(``geoff.md.metrics.rdf_error`` against the reference potential's RDF) exceeds ``threshold``
(Å). The per-step criteria (atoms closer than a floor, temperature runaway) are
``FailureCriteria``'s ``min_distance`` and ``temperature_factor``; this one needs a window of
frames, so it is read from the written trajectory afterwards.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .metrics import rdf, rdf_error


def rdf_window_errors(frames: Sequence, g_ref, window_ps: float, r_max: float = 6.0,
                      n_bins: int = 200) -> List[Tuple[float, float]]:
    """[(end time of the window in ps, RDF error in Å)] of consecutive windows of frames
    (each frame's ``info["time_ps"]``, as the harness writes them); a last, partial window
    counts if it holds at least two frames."""
    if window_ps <= 0:
        raise ValueError(f"window_ps must be positive, got {window_ps}")
    out, window, end = [], [], window_ps
    for atoms in frames:
        t = float(atoms.info["time_ps"])
        while t > end + 1e-9:
            if window:
                out.append((end, rdf_error(rdf(window, r_max, n_bins)[1], g_ref, r_max)))
            window, end = [], end + window_ps
        window.append(atoms)
    if len(window) >= 2 or (window and not out):
        t_last = float(window[-1].info["time_ps"])
        out.append((t_last, rdf_error(rdf(window, r_max, n_bins)[1], g_ref, r_max)))
    return out


def rdf_failure_time(frames: Sequence, g_ref, threshold: float, window_ps: float,
                     r_max: float = 6.0, n_bins: int = 200) -> Optional[float]:
    """The end (ps) of the first window whose RDF error exceeds ``threshold`` Å, or None."""
    for end, err in rdf_window_errors(frames, g_ref, window_ps, r_max, n_bins):
        if err > threshold:
            return end
    return None

"""Per-run analysis: the metrics of one finished (or failed) trajectory.

Definitions are in ``geoff.md.metrics``; cross-run numbers (RDF error against the reference,
speed-ups, the mean over seeds) are in ``geoff.md.summary``.
"""
from __future__ import annotations

from . import metrics as M
from .recording import RunResult
from .settings import MDSettings


def analyse_run(result: RunResult, settings: MDSettings, analysis: dict) -> dict:
    """Metrics of one run (see ``geoff.md.metrics`` for the definitions)."""
    th = result.thermo
    n = result.n_atoms
    eq = float(analysis.get("equilibration_fraction", 0.2))
    out = {"n_atoms": n, "n_dof": result.n_dof, "steps_requested": result.steps_requested,
           "steps_done": result.steps_done,
           "simulated_ps": result.steps_done * settings.timestep_fs / 1000.0,
           "steps_per_s": result.steps_per_s, "wall_s": result.wall_s,
           "status": "failed" if result.failed else "ok"}
    if result.failure is not None:
        f = result.failure
        out.update(failure_step=f.step, failure_time_ps=f.step * settings.timestep_fs / 1000.0,
                   failure_reason=f.reason, message=f.message)
    t, cons = th["time_ps"], th["conserved"]
    out["drift_meV_atom_ps"] = M.energy_drift(t, cons, n) if len(t) >= 3 else float("nan")
    out["fluct_meV_atom"] = M.energy_fluctuation(t, cons, n) if len(t) >= 3 else float("nan")
    out["max_dev_meV_atom"] = M.max_deviation(cons, n) if len(t) else float("nan")
    start = int(len(t) * eq)
    temps = th["temperature"][start:]
    target = settings.temperature_K if settings.ensemble != "nve" else None
    out.update(M.temperature_stats(temps, target))
    if target is None:
        out["T_target"] = float("nan")
        out["T_error"] = float("nan")
    if settings.ensemble != "nve" and len(temps) >= 5:
        ks = M.kinetic_energy_ks(th["ekin"][start:], result.n_dof, settings.temperature_K)
        out["ke_ks"] = ks["ks"]
        out.update({k: v for k, v in ks.items() if k != "ks"})
    frames = result.frames[int(len(result.frames) * eq):]
    if frames:
        r, g = M.rdf(frames, r_max=float(analysis.get("rdf_r_max", 6.0)),
                     n_bins=int(analysis.get("rdf_bins", 150)))
        out["rdf_r"] = r.tolist()
        out["rdf_g"] = g.tolist()
        out["rdf_frames"] = len(frames)
    return out

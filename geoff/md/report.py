"""The markdown report of a stability study: setup, results, force-field table, failures,
runs that could not be made (and why), the plots of ``geoff.md.plots`` and the definitions."""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Dict, List

from ..checkpoint import atomic_write
from .plots import make_plots
from .structures import build_structure
from .study_config import ensemble_timesteps
from .summary import finite

DEFINITIONS = """\
- **drift**: slope of a linear fit of the conserved quantity per atom against time
  (meV/atom/ps). NVE: E_pot + E_kin. Thermostatted runs: E_pot + E_kin minus the energy the
  thermostat exchanged (BAOAB Langevin: the O steps' kinetic-energy changes; Bussi: the
  rescalings'; Nosé–Hoover: plus the chain's energy). Multiple time stepping: sampled at
  synchronised (outer) steps.
- **fluct**: RMS deviation of the same quantity from the fit (meV/atom). For velocity Verlet
  it scales as dt². `results.csv` also has `max_dev_meV_atom`, the largest |E(t) − E(0)| per
  atom (a direct head often jumps at the start and then oscillates: an offset, not a slope).
- **T error**: mean temperature after equilibration minus the target (K), T = 2K/(n_dof k_B)
  with n_dof = 3N − 3 for momentum-conserving integrators, 3N for Langevin.
- **KS**: Kolmogorov–Smirnov distance between the sampled kinetic energies and the canonical
  Gamma(n_dof/2, k_B T) distribution (a distance; MD samples are correlated, so no p-value).
- **RDF error**: ∫₀^r_max |g(r) − g_ref(r)| dr (Å) against the reference potential's run at the
  same ensemble (Fu et al., "Forces are not Enough", TMLR 2023), after equilibration.
- **time to failure**: mean over seeds of the time of the first failure (NaN, force above the
  threshold, temperature above k × target, two atoms too close, broken/formed bond); seeds
  that survived count with their full length, so it is a lower bound when some survived.
- **λ** (Jacobian asymmetry): ‖(J − Jᵀ)/2‖_F / ‖J‖_F of J = ∂F/∂x on sample structures (Bigi,
  Langer & Ceriotti 2024): 0 for a gradient field; for `mts` the direct (inner) head's.
- **speed-up**: MD steps/s over the baseline model's in the same cell of the matrix; the
  force-call columns time one energy+forces evaluation on a fixed graph.
"""


def _fmt(v, digits=3, std=None):
    if not finite(v):
        return "–"
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        s = f"{v:.{digits - 1}e}"
    else:
        s = f"{v:.{digits}g}"
    if finite(std) and std > 0:
        s += f" ± {std:.2g}"
    return s


def _table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _written_on() -> str:
    """Local time now, or ``SOURCE_DATE_EPOCH`` (UTC) when set: the reproducible-builds
    convention, so that a report regenerated from cached runs can be compared byte for byte."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        when = datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    else:
        when = datetime.datetime.now()
    return when.strftime("%Y-%m-%d %H:%M")


def write_report(cfg, root: Path, rows, summary, model_rows, records) -> Path:
    """``report.md`` with the tables, failures, definitions and the figures."""
    sections = make_plots(cfg, root, rows, records)
    out = [f"# Stability study: {cfg.name}", "",
           f"Written by `geoff stability` on {_written_on()}. Every run's trajectory, thermo "
           "log and metrics are under `runs/`; the numbers below are in `summary.csv` (per "
           "seed: `results.csv`; per model: `models.csv`).", ""]
    out += _setup(cfg) + _results(summary) + _force_fields(model_rows) + _failures(rows)
    out += _not_run(rows)
    out += ["## Plots", ""]
    for title, pngs in sections.items():
        out += [f"### {title}", ""]
        out += [f"![{p}]({p})" for p in pngs]
        out.append("")
    out += ["## Definitions", "", DEFINITIONS]
    path = root / "report.md"
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(out)))
    return path


def _setup(cfg) -> List[str]:
    mrows = []
    for m in cfg.models:
        source = m.source()
        extra = f", M = {m.mts_steps}" if m.forces == "mts" else ""
        mrows.append([m.name, m.forces + extra, f"`{source}`" if source else "",
                      m.engine or cfg.engine])
    out = ["## Setup", "", _table(["model", "forces", "source", "engine"], mrows), ""]
    srows = []
    for s in cfg.systems:
        n = "?"
        try:
            n = len(build_structure(s["structure"], cfg.base_dir))
        except Exception:  # noqa: BLE001 - the report must not fail on this
            pass
        ref = (s.get("reference") or {}).get("name", "none")
        srows.append([s["name"], n, ref])
    out += [_table(["system", "atoms", "reference"], srows), ""]
    erows = []
    for e in cfg.ensembles:
        steps = e.get("steps", cfg.md.get("steps", 1000))
        length = f"{e['time_ps']:g} ps" if "time_ps" in e else f"{steps} steps"
        tau_fs = e.get("tau_fs", cfg.md.get("tau_fs", 100))
        tau = f"{tau_fs:g} fs" if e["ensemble"] != "nve" else "–"
        dts = ", ".join(f"{d:g}" for d in ensemble_timesteps(cfg, e))
        erows.append([e["name"], e["ensemble"], f"{e.get('temperature_K', 300):g} K", tau,
                      length, dts])
    return out + [_table(["ensemble", "integrator", "T", "τ", "length", "dt (fs)"], erows), "",
                  f"Seeds: {', '.join(str(s) for s in cfg.seeds)}; precision {cfg.dtype}; "
                  "NVE runs start from Maxwell-Boltzmann velocities at T.", ""]


def _results(summary) -> List[str]:
    out = ["## Results", "",
           "Mean ± standard deviation over seeds. Drift and fluctuation in meV/atom(/ps), "
           "T error in K, RDF error in Å, time to failure in ps (failed/ran).", ""]
    trows = []
    for s in summary:
        ttf = _fmt(s["time_to_failure_ps"]) + f" ({s['failed']}/{s['ran']})"
        trows.append([s["model"], s["system"], s["ensemble"], f"{s['dt_fs']:g}",
                      _fmt(s["drift_meV_atom_ps"], std=s["drift_meV_atom_ps_std"]),
                      _fmt(s["fluct_meV_atom"]),
                      _fmt(s["T_error"], std=s["T_error_std"]), _fmt(s["ke_ks"]),
                      _fmt(s["rdf_error"]), ttf, _fmt(s["steps_per_s"]), _fmt(s["speedup"])])
    return out + [_table(["model", "system", "ensemble", "dt (fs)", "drift", "fluct",
                          "T error", "KS", "RDF error", "time to failure", "steps/s",
                          "speed-up"], trows), ""]


def _force_fields(model_rows) -> List[str]:
    if not model_rows:
        return []
    out = ["## Force fields", "",
           "λ: Jacobian asymmetry of the forces each model integrates with (0 for a "
           "gradient field). Force call: one energy+forces evaluation on a fixed graph.", ""]
    frows = []
    for r in model_rows:
        frows.append([r["model"], r["forces"], r["force_head"], r["system"],
                      _fmt(r.get("jacobian_asymmetry")), _fmt(r.get("force_call_ms")),
                      _fmt(r.get("force_call_speedup")),
                      _fmt(r.get("direct_speedup_same_model"))])
    return out + [_table(["model", "forces", "head", "system", "λ", "force call (ms)",
                          "speed-up vs baseline", "direct/conservative on same model"], frows),
                  ""]


def _failures(rows) -> List[str]:
    failed = [r for r in rows if r["status"] == "failed"]
    if not failed:
        return []
    out = ["## Failures", "",
           "Per model, system and ensemble: failed runs and the first one's message; every "
           "failed run kept its trajectory up to and including the failing step.", ""]
    groups: Dict[tuple, List[dict]] = {}
    for r in failed:
        groups.setdefault((r["model"], r["system"], r["ensemble"]), []).append(r)
    for (model, system, ensemble), rs in groups.items():
        ran = sum(1 for r in rows if (r["model"], r["system"], r["ensemble"]) ==
                  (model, system, ensemble) and r["status"] in ("ok", "failed"))
        reasons: Dict[str, int] = {}
        for r in rs:
            reasons[r["failure_reason"]] = reasons.get(r["failure_reason"], 0) + 1
        why = ", ".join(f"{k} × {v}" for k, v in reasons.items())
        first = min(rs, key=lambda r: (r["dt_fs"], r["seed"]))
        out.append(f"- {model} / {system} / {ensemble}: {len(rs)} of {ran} failed ({why}); "
                   f"dt {first['dt_fs']:g} fs, seed {first['seed']}: {first['message']}")
    return out + [""]


def _not_run(rows) -> List[str]:
    """Each model's distinct reasons for runs it could not make (skipped or error)."""
    skipped = [r for r in rows if r["status"] in ("skipped", "error")]
    if not skipped:
        return []
    out = ["## Not run", ""]
    seen = set()
    for r in skipped:
        key = (r["model"], r["message"])
        if key not in seen:
            seen.add(key)
            out.append(f"- {r['model']}: {r['message']}")
    return out + [""]

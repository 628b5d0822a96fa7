"""Plots and the markdown report of a stability study (``geoff.md.stability``).

Figures (PNG, one colour per model throughout, the reference potential in black):

* ``energy_<system>_<ensemble>.png``: conserved energy minus its start (meV/atom) against
  time, one panel per dt, first seed (symmetric-log axis: conservative and direct heads differ
  by orders of magnitude); a cross marks a failure;
* ``temperature_<system>_<ensemble>.png``: T against time, target dashed;
* ``rdf_<system>_<ensemble>.png``: g(r) of each model over the reference's;
* ``drift_<system>.png``: |energy drift| per model, grouped by dt, one panel per ensemble;
  bars are the mean over seeds, error bars their standard deviation, a dagger marks runs that
  failed (their drift is over the part before the failure).
"""
from __future__ import annotations

import datetime
import math
import os
from pathlib import Path
from typing import Dict, List

import numpy as np

from .stability import _label, ensemble_timesteps, finite

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


def _colours(models: List[str]) -> Dict[str, str]:
    import matplotlib

    n = 10 if len(models) <= 10 else 20
    cmap = matplotlib.colormaps[f"tab{n}"]
    return {m: cmap(k % n) for k, m in enumerate(models)}


def _setup_matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                         "legend.fontsize": 9, "figure.dpi": 110})
    return plt


def _first_seed_records(records, model, system, ensemble, dt):
    recs = [r for r in records.values()
            if r["run"].model.name == model and r["run"].system["name"] == system
            and r["run"].ensemble["name"] == ensemble and r["run"].dt == dt]
    return sorted(recs, key=lambda r: r["run"].seed)[:1]


def _reference_records(records, system, ensemble):
    return [r for r in records.values() if r["run"].is_reference
            and r["run"].system["name"] == system and r["run"].ensemble["name"] == ensemble]


def _series_panels(plt, cfg, records, system, ensemble, colours, quantity, path):
    ens = next(e for e in cfg.ensembles if e["name"] == ensemble)
    dts = ensemble_timesteps(cfg, ens)
    ncol = len(dts)
    fig, axes = plt.subplots(1, ncol, figsize=(4.6 * ncol + 0.6, 3.6), squeeze=False,
                             sharey=quantity == "temperature")
    axes = axes[0]
    refs = _reference_records(records, system, ensemble)
    linthresh = []
    for ax, dt in zip(axes, dts):
        curves = []
        for model in cfg.models:
            for rec in _first_seed_records(records, model.name, system, ensemble, dt):
                curves.append((model.name, colours[model.name], rec, "-"))
        for rec in refs:
            if quantity == "temperature" or rec["run"].dt == dt:
                curves.append((f"{rec['run'].model.name} (dt={rec['run'].dt:g} fs)", "black",
                               rec, "--"))
        for name, colour, rec, style in curves:
            th = rec["thermo"]
            if len(th["time_ps"]) == 0:
                continue
            n = rec["metrics"].get("n_atoms") or 1
            t = th["time_ps"]
            if quantity == "energy":
                y = (th["conserved"] - th["conserved"][0]) / n * 1e3
                amp = np.nanmax(np.abs(y)) if len(y) else 0.0
                if amp > 0 and np.isfinite(amp):
                    linthresh.append(amp)
            else:
                y = th["temperature"]
            ax.plot(t, y, style, color=colour, lw=1.3, label=name)
            if rec["metrics"].get("status") == "failed" and len(t):
                ax.plot(t[-1], y[-1], "x", color=colour, ms=9, mew=2)
        if quantity == "temperature" and ens["ensemble"] != "nve":
            ax.axhline(float(ens.get("temperature_K", 300)), color="grey", ls=":", lw=1,
                       label="target")
        ax.set_title(f"dt = {dt:g} fs")
        ax.set_xlabel("time (ps)")
        ax.grid(alpha=0.3)
    if quantity == "energy":
        from matplotlib.ticker import SymmetricalLogLocator

        axes[0].set_ylabel("conserved energy − start (meV/atom)")
        # linear within the smallest curve's amplitude (a power of ten), log beyond it
        small = max(min(linthresh) if linthresh else 1e-3, 1e-6)
        lt = 10.0 ** math.floor(math.log10(small))
        decades = math.log10(max(linthresh) / lt) if linthresh else 1.0
        for ax in axes:
            ax.set_yscale("symlog", linthresh=lt, linscale=1.0)
            ax.yaxis.set_major_locator(SymmetricalLogLocator(
                base=10.0 if decades <= 4 else 100.0, linthresh=lt))
    else:
        axes[0].set_ylabel("temperature (K)")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    what = "Conserved energy" if quantity == "energy" else "Temperature"
    fig.suptitle(f"{what}: {system}, {ensemble} (seed {cfg.seeds[0]}; × = failure)")
    if labels:  # a panel set with no finished run has nothing to label
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5),
                   bbox_to_anchor=(0.5, -0.01), frameon=False)
    fig.tight_layout(rect=(0, 0.1 if len(labels) <= 5 else 0.16, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def _rdf_panels(plt, cfg, records, system, ensemble, colours, path) -> bool:
    dts = ensemble_timesteps(cfg, next(e for e in cfg.ensembles if e["name"] == ensemble))
    ncol = len(dts)
    fig, axes = plt.subplots(1, ncol, figsize=(4.6 * ncol + 0.6, 3.6), squeeze=False,
                             sharey=True)
    axes = axes[0]
    refs = _reference_records(records, system, ensemble)
    drawn = False
    for ax, dt in zip(axes, dts):
        for rec in refs:
            m = rec["metrics"]
            if m.get("rdf_g"):
                ax.plot(m["rdf_r"], m["rdf_g"], color="black", lw=2.2, alpha=0.45,
                        label=f"{rec['run'].model.name} (reference)")
                drawn = True
        for model in cfg.models:
            for rec in _first_seed_records(records, model.name, system, ensemble, dt):
                m = rec["metrics"]
                if m.get("rdf_g"):
                    err = m.get("rdf_error")
                    extra = f" (err {err:.2f} Å)" if finite(err) else ""
                    ax.plot(m["rdf_r"], m["rdf_g"], color=colours[model.name], lw=1.2,
                            label=f"{model.name}{extra}")
                    drawn = True
        ax.set_title(f"dt = {dt:g} fs")
        ax.set_xlabel("r (Å)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", frameon=False, fontsize=8)
    axes[0].set_ylabel("g(r)")
    fig.suptitle(f"Radial distribution: {system}, {ensemble} (seed {cfg.seeds[0]}, "
                 "after equilibration)")
    fig.tight_layout()
    if drawn:
        fig.savefig(path)
    plt.close(fig)
    return drawn


def _drift_bars(plt, cfg, rows, system, colours, path) -> bool:
    ensembles = [e["name"] for e in cfg.ensembles]
    models = [m.name for m in cfg.models]
    refs = sorted({r["model"] for r in rows if r["model"].startswith("ref:")
                   and r["system"] == system})
    names = refs + models
    # one row per ensemble (a row of panels grows too wide with a dozen models)
    n_groups = max(len(ensemble_timesteps(cfg, e)) for e in cfg.ensembles)
    fig, axes = plt.subplots(len(ensembles), 1, squeeze=False, sharey=True,
                             figsize=(min(16.0, max(6.0, 0.22 * len(names) * n_groups + 2.0)),
                                      2.8 * len(ensembles) + 1.0))
    axes = axes[:, 0]
    width = 0.8 / max(len(names), 1)
    drawn = False
    for ax, ensemble in zip(axes, ensembles):
        ens_dts = ensemble_timesteps(cfg, next(e for e in cfg.ensembles
                                               if e["name"] == ensemble))
        for k, name in enumerate(names):
            xs, heights, lo, hi, failed = [], [], [], [], []
            for g, dt in enumerate(ens_dts):
                vals = [abs(r["drift_meV_atom_ps"]) for r in rows
                        if r["model"] == name and r["system"] == system
                        and r["ensemble"] == ensemble and r["dt_fs"] == dt
                        and finite(r.get("drift_meV_atom_ps"))]
                nfail = sum(1 for r in rows if r["model"] == name and r["system"] == system
                            and r["ensemble"] == ensemble and r["dt_fs"] == dt
                            and r["status"] == "failed")
                if not vals:
                    continue
                mean = float(np.mean(vals))
                std = float(np.std(vals)) if len(vals) > 1 else 0.0
                xs.append(g + (k - (len(names) - 1) / 2) * width)
                heights.append(max(mean, 1e-12))
                lo.append(min(std, 0.9 * max(mean, 1e-12)))
                hi.append(std)
                failed.append(nfail)
            if not xs:
                continue
            colour = "black" if name.startswith("ref:") else colours[name]
            ax.bar(xs, heights, width=width * 0.92, color=colour,
                   alpha=0.5 if name.startswith("ref:") else 0.85, label=name,
                   yerr=[lo, hi], capsize=3, error_kw={"lw": 1})
            for x, h, e, nf in zip(xs, heights, hi, failed):
                if nf:
                    ax.text(x, (h + e) * 1.15, "†" * min(nf, 3), ha="center", va="bottom",
                            fontsize=10, color="crimson")
            drawn = True
        ax.set_yscale("log")
        ax.set_xticks(range(len(ens_dts)))
        ax.set_xticklabels([f"dt = {dt:g} fs" for dt in ens_dts])
        ax.set_xlim(-0.5, n_groups - 0.5)
        ax.set_title(ensemble, fontsize=10)
        ax.set_ylabel("|drift| (meV/atom/ps)")
        ax.grid(axis="y", alpha=0.3, which="major")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.suptitle(f"Energy drift: {system} (mean over {len(cfg.seeds)} seed(s), "
                 "error bar = std, † = failed run)")
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6),
                   bbox_to_anchor=(0.5, 0.0), frameon=False, fontsize=8)
    legend_rows = -(-len(labels) // 6)
    fig.tight_layout(rect=(0, min(0.4, 0.035 * legend_rows * 4 / len(ensembles)), 1, 1))
    if drawn:
        fig.savefig(path)
    plt.close(fig)
    return drawn


def make_plots(cfg, root: Path, rows, records) -> Dict[str, List[str]]:
    """Write every figure; returns ``{section title: [png names]}``."""
    plt = _setup_matplotlib()
    colours = _colours([m.name for m in cfg.models])
    sections: Dict[str, List[str]] = {}
    for system in cfg.systems:
        sname = system["name"]
        for ens in cfg.ensembles:
            ename = ens["name"]
            title = f"{sname} / {ename}"
            names = []
            for quantity in ("energy", "temperature"):
                png = f"{quantity}_{_label(sname)}_{_label(ename)}.png"
                _series_panels(plt, cfg, records, sname, ename, colours, quantity, root / png)
                names.append(png)
            png = f"rdf_{_label(sname)}_{_label(ename)}.png"
            if _rdf_panels(plt, cfg, records, sname, ename, colours, root / png):
                names.append(png)
            sections[title] = names
        png = f"drift_{_label(sname)}.png"
        if _drift_bars(plt, cfg, rows, sname, colours, root / png):
            sections[f"{sname} / energy drift"] = [png]
    return sections


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
    now = _written_on()
    out = [f"# Stability study: {cfg.name}", "",
           f"Written by `geoff stability` on {now}. Every run's trajectory, thermo log and "
           "metrics are under `runs/`; the numbers below are in `summary.csv` (per seed: "
           "`results.csv`; per model: `models.csv`).", ""]
    out += ["## Setup", ""]
    mrows = []
    for m in cfg.models:
        source = m.checkpoint or (f"random weights ({m.build.get('name')})" if m.build else "")
        extra = f", M = {m.mts_steps}" if m.forces == "mts" else ""
        mrows.append([m.name, m.forces + extra, f"`{source}`" if source else "",
                      m.engine or cfg.engine])
    out += [_table(["model", "forces", "source", "engine"], mrows), ""]
    srows = []
    for s in cfg.systems:
        n = "?"
        try:
            from .stability import build_structure

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
    out += [_table(["ensemble", "integrator", "T", "τ", "length", "dt (fs)"], erows), "",
            f"Seeds: {', '.join(str(s) for s in cfg.seeds)}; precision {cfg.dtype}; "
            "NVE runs start from Maxwell-Boltzmann velocities at T.", ""]

    out += ["## Results", "",
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
    out += [_table(["model", "system", "ensemble", "dt (fs)", "drift", "fluct", "T error",
                    "KS", "RDF error", "time to failure", "steps/s", "speed-up"], trows), ""]
    if model_rows:
        out += ["## Force fields", "",
                "λ: Jacobian asymmetry of the forces each model integrates with (0 for a "
                "gradient field). Force call: one energy+forces evaluation on a fixed graph.", ""]
        frows = []
        for r in model_rows:
            frows.append([r["model"], r["forces"], r["force_head"], r["system"],
                          _fmt(r.get("jacobian_asymmetry")), _fmt(r.get("force_call_ms")),
                          _fmt(r.get("force_call_speedup")),
                          _fmt(r.get("direct_speedup_same_model"))])
        out += [_table(["model", "forces", "head", "system", "λ", "force call (ms)",
                        "speed-up vs baseline", "direct/conservative on same model"], frows), ""]
    failed = [r for r in rows if r["status"] == "failed"]
    skipped = [r for r in rows if r["status"] in ("skipped", "error")]
    if failed:
        out += ["## Failures", "",
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
        out.append("")
    if skipped:
        out += ["## Not run", ""]
        seen = set()
        for r in skipped:
            key = (r["model"], r["message"])
            if key not in seen:
                seen.add(key)
                out.append(f"- {r['model']}: {r['message']}")
        out.append("")
    out += ["## Plots", ""]
    for title, pngs in sections.items():
        out += [f"### {title}", ""]
        out += [f"![{p}]({p})" for p in pngs]
        out.append("")
    out += ["## Definitions", "", DEFINITIONS]
    path = root / "report.md"
    from ..checkpoint import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(out)))
    return path

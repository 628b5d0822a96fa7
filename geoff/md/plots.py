"""The plots of a stability study (``geoff.md.stability``); ``geoff.md.report`` embeds them.

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

import math
from pathlib import Path
from typing import Dict, List

import numpy as np

from .study_config import ensemble_timesteps, label
from .study_runs import first_seed_record, reference_records
from .summary import finite


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


def _symlog(axes, amplitudes: List[float]) -> None:
    """Linear within the smallest curve's amplitude (a power of ten), log beyond it."""
    from matplotlib.ticker import SymmetricalLogLocator

    small = max(min(amplitudes) if amplitudes else 1e-3, 1e-6)
    lt = 10.0 ** math.floor(math.log10(small))
    decades = math.log10(max(amplitudes) / lt) if amplitudes else 1.0
    for ax in axes:
        ax.set_yscale("symlog", linthresh=lt, linscale=1.0)
        ax.yaxis.set_major_locator(SymmetricalLogLocator(
            base=10.0 if decades <= 4 else 100.0, linthresh=lt))


def _legend_entries(axes, handles=None, labels=None):
    """(handles, labels) of every panel, each label once, in the order first seen."""
    handles, labels = list(handles or []), list(labels or [])
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    return handles, labels


def _series_panels(plt, cfg, records, system, ensemble, colours, quantity, path):
    ens = next(e for e in cfg.ensembles if e["name"] == ensemble)
    dts = ensemble_timesteps(cfg, ens)
    ncol = len(dts)
    fig, axes = plt.subplots(1, ncol, figsize=(4.6 * ncol + 0.6, 3.6), squeeze=False,
                             sharey=quantity == "temperature")
    axes = axes[0]
    refs = reference_records(records, system, ensemble)
    linthresh = []
    for ax, dt in zip(axes, dts):
        curves = []
        for model in cfg.models:
            for rec in first_seed_record(records, model.name, system, ensemble, dt):
                curves.append((model.name, colours[model.name], rec, "-"))
        for rec in refs:
            if quantity == "temperature" or rec.run.dt == dt:
                curves.append((f"{rec.run.model.name} (dt={rec.run.dt:g} fs)", "black",
                               rec, "--"))
        for name, colour, rec, style in curves:
            th = rec.thermo
            if len(th["time_ps"]) == 0:
                continue
            n = rec.metrics.get("n_atoms") or 1
            t = th["time_ps"]
            if quantity == "energy":
                y = (th["conserved"] - th["conserved"][0]) / n * 1e3
                amp = np.nanmax(np.abs(y)) if len(y) else 0.0
                if amp > 0 and np.isfinite(amp):
                    linthresh.append(amp)
            else:
                y = th["temperature"]
            ax.plot(t, y, style, color=colour, lw=1.3, label=name)
            if rec.metrics.get("status") == "failed" and len(t):
                ax.plot(t[-1], y[-1], "x", color=colour, ms=9, mew=2)
        if quantity == "temperature" and ens["ensemble"] != "nve":
            ax.axhline(float(ens.get("temperature_K", 300)), color="grey", ls=":", lw=1,
                       label="target")
        ax.set_title(f"dt = {dt:g} fs")
        ax.set_xlabel("time (ps)")
        ax.grid(alpha=0.3)
    if quantity == "energy":
        axes[0].set_ylabel("conserved energy − start (meV/atom)")
        _symlog(axes, linthresh)
    else:
        axes[0].set_ylabel("temperature (K)")
    handles, labels = _legend_entries(axes)
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
    refs = reference_records(records, system, ensemble)
    drawn = False
    for ax, dt in zip(axes, dts):
        for rec in refs:
            m = rec.metrics
            if m.get("rdf_g"):
                ax.plot(m["rdf_r"], m["rdf_g"], color="black", lw=2.2, alpha=0.45,
                        label=f"{rec.run.model.name} (reference)")
                drawn = True
        for model in cfg.models:
            for rec in first_seed_record(records, model.name, system, ensemble, dt):
                m = rec.metrics
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


def _bars(ax, rows, name, system, ensemble, dts, offset, width, colour) -> bool:
    """One model's |drift| bars (mean over seeds, std error bars, † per failed run) at each
    dt of ``ensemble``; False when it has no finite drift there."""
    xs, heights, lo, hi, failed = [], [], [], [], []
    for g, dt in enumerate(dts):
        cell = [r for r in rows if r["model"] == name and r["system"] == system
                and r["ensemble"] == ensemble and r["dt_fs"] == dt]
        vals = [abs(r["drift_meV_atom_ps"]) for r in cell if finite(r.get("drift_meV_atom_ps"))]
        if not vals:
            continue
        mean = float(np.mean(vals))
        std = float(np.std(vals)) if len(vals) > 1 else 0.0
        xs.append(g + offset)
        heights.append(max(mean, 1e-12))
        lo.append(min(std, 0.9 * max(mean, 1e-12)))
        hi.append(std)
        failed.append(sum(1 for r in cell if r["status"] == "failed"))
    if not xs:
        return False
    ax.bar(xs, heights, width=width * 0.92, color=colour,
           alpha=0.5 if name.startswith("ref:") else 0.85, label=name,
           yerr=[lo, hi], capsize=3, error_kw={"lw": 1})
    for x, h, e, nf in zip(xs, heights, hi, failed):
        if nf:
            ax.text(x, (h + e) * 1.15, "†" * min(nf, 3), ha="center", va="bottom",
                    fontsize=10, color="crimson")
    return True


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
            colour = "black" if name.startswith("ref:") else colours[name]
            offset = (k - (len(names) - 1) / 2) * width
            drawn |= _bars(ax, rows, name, system, ensemble, ens_dts, offset, width, colour)
        ax.set_yscale("log")
        ax.set_xticks(range(len(ens_dts)))
        ax.set_xticklabels([f"dt = {dt:g} fs" for dt in ens_dts])
        ax.set_xlim(-0.5, n_groups - 0.5)
        ax.set_title(ensemble, fontsize=10)
        ax.set_ylabel("|drift| (meV/atom/ps)")
        ax.grid(axis="y", alpha=0.3, which="major")
    handles, labels = _legend_entries(axes)
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
                png = f"{quantity}_{label(sname)}_{label(ename)}.png"
                _series_panels(plt, cfg, records, sname, ename, colours, quantity, root / png)
                names.append(png)
            png = f"rdf_{label(sname)}_{label(ename)}.png"
            if _rdf_panels(plt, cfg, records, sname, ename, colours, root / png):
                names.append(png)
            sections[title] = names
        png = f"drift_{label(sname)}.png"
        if _drift_bars(plt, cfg, rows, sname, colours, root / png):
            sections[f"{sname} / energy drift"] = [png]
    return sections

"""Cross-run post-processing of a study: each run's RDF error against its system's reference
run, speed-ups against the baseline model, the per-model table (Jacobian asymmetry, the cost
of a force call) and the mean and spread over seeds."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from . import metrics as M
from .structures import build_structure
from .study_config import ModelSpec, StudyConfig, baseline_of, label
from .study_io import read_frames, write_json
from .study_runs import Records, RunKey, plan, reference_record, reference_records

# the per-model table's columns in the order they are computed (a cached table, read back from
# JSON with sorted keys, is put back in this order so that a report-only pass writes the same
# models.csv as the run that computed it)
MODEL_COLUMNS = ["model", "forces", "force_head", "system", "n_atoms", "jacobian_asymmetry",
                 "jacobian_structures", "force_call_ms", "conservative_call_ms_same_model",
                 "direct_call_ms_same_model", "direct_speedup_same_model"]


def rdf_errors(cfg: StudyConfig, rows: List[dict], records: Records) -> None:
    """RDF error of every run against its system's reference at the same ensemble."""
    r_max = float(cfg.analysis_option("rdf_r_max", 6.0))
    for row in rows:
        rec = records.get(RunKey.of_row(row))
        ref = reference_record(records, row["system"], row["ensemble"])
        if rec is None or ref is None or rec is ref:
            continue
        g, g_ref = rec.metrics.get("rdf_g"), ref.metrics.get("rdf_g")
        if g is None or g_ref is None or len(g) != len(g_ref):
            continue
        err = M.rdf_error(g, g_ref, r_max)
        row["rdf_error"] = err
        rec.metrics["rdf_error"] = err
        rec.metrics["rdf_reference"] = ref.run.model.name
        write_json(rec.directory / "metrics.json", rec.metrics)


def speedups(cfg: StudyConfig, rows: List[dict]) -> None:
    """Steps/s over the baseline model's in the same cell of the matrix."""
    index = {RunKey.of_row(r): r for r in rows}
    for r in rows:
        if r["model"].startswith("ref:"):
            continue  # a reference potential is a different code; no speed-up to report
        base = baseline_of(cfg, r["model"])
        b = index.get(RunKey.of_row(r)._replace(model=base))
        if b is None or not isinstance(r["steps_per_s"], float) or \
                not isinstance(b["steps_per_s"], float):
            continue
        r["speedup"] = M.speedup(r["steps_per_s"], b["steps_per_s"])


def model_table(cfg: StudyConfig, records: Records, potentials: dict, root: Path,
                models: Optional[List[ModelSpec]] = None) -> List[dict]:
    """Per geoff model and system: Jacobian asymmetry lambda and the force-call time.

    Each model's rows are cached in ``root/models/<model>.json``; a resumed (or report-only)
    study reuses them, so a study split with ``only`` computes them once, in the process that
    runs the model."""
    out = []
    times: Dict[tuple, float] = {}
    for model in models if models is not None else cfg.models:
        if not model.is_geoff:
            continue  # references and foreign calculators have no autograd Jacobian here
        if models is None and not any(rec.run.model.name == model.name and
                                      rec.metrics.get("status") != "skipped"
                                      for rec in records.values()):
            continue
        cache = root / "models" / f"{label(model.name)}.json"
        if (cfg.resume or cfg.report_only) and cache.exists():
            rows = [_in_column_order(r) for r in json.loads(cache.read_text())]
        elif cfg.report_only:
            continue
        else:
            rows = model_rows(cfg, model, potentials, records, root)
            if rows is None:
                continue
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, rows)
        for row in rows:
            if "force_call_ms" in row:
                times[(row["model"], row["system"])] = 1e-3 * row["force_call_ms"]
        out += rows
    for row in out:
        b = times.get((baseline_of(cfg, row["model"]), row["system"]))
        t = times.get((row["model"], row["system"]))
        if b and t:
            row["force_call_speedup"] = b / t
    return out


def _in_column_order(row: dict) -> dict:
    known = [k for k in MODEL_COLUMNS if k in row]
    return {k: row[k] for k in known + [k for k in row if k not in MODEL_COLUMNS]}


def _jacobian_samples(cfg: StudyConfig, system: dict, records: Records, root: Path, n: int):
    """A rattled crystal, then frames of the reference trajectory (this process's, else on
    disk), else more rattled crystals: ``n`` structures for the Jacobian asymmetry."""
    atoms0 = build_structure(system["structure"], cfg.base_dir)
    samples = [atoms0.copy()]
    samples[0].rattle(stdev=0.05, seed=1)
    frames = []
    for rec in reference_records(records, system["name"]):
        frames = rec.frames or []
        break
    if not frames:
        for run in plan(cfg):
            if run.is_reference and run.system["name"] == system["name"] and \
                    (run.directory(root) / "metrics.json").exists():
                frames = read_frames(run.directory(root))
                break
    for frame in frames[::-1]:
        if len(samples) >= n:
            break
        samples.append(frame)
    while len(samples) < n:
        extra = atoms0.copy()
        extra.rattle(stdev=0.05 * (len(samples) + 1), seed=len(samples) + 1)
        samples.append(extra)
    return atoms0, samples


def model_rows(cfg: StudyConfig, model: ModelSpec, potentials: dict, records: Records,
               root: Path) -> Optional[List[dict]]:
    """The per-model table's rows of one geoff model (one per system); None if it cannot load."""
    import torch

    from ..inference import torch_dtype

    n_struct = int(cfg.analysis_option("jacobian_structures", 2))
    timing = bool(cfg.analysis_option("force_timing", True))
    max_atoms = int(cfg.analysis_option("jacobian_max_atoms", 256))
    pot = potentials.get(model.name)
    if pot is None:  # every run of it was resumed from disk, or none has run yet
        try:
            pot = potentials[model.name] = model.potential(cfg.dtype)
        except (ValueError, FileNotFoundError) as exc:
            print(f"geoff stability: no model table row for {model.name}: {exc}")
            return None
    net = pot if isinstance(pot, torch.nn.Module) else None
    if net is None:
        from ..checkpoint import load

        net = load(pot)
    net = net.to(dtype=torch_dtype(cfg.dtype), device=cfg.device)
    forces = "direct" if model.forces in ("direct", "mts") else "conservative"
    rows = []
    for system in cfg.systems:
        atoms0, samples = _jacobian_samples(cfg, system, records, root, n_struct)
        row = {"model": model.name, "forces": model.forces, "force_head": net.force_head,
               "system": system["name"], "n_atoms": len(atoms0)}
        if n_struct > 0 and len(atoms0) <= max_atoms:
            lam = [M.jacobian_asymmetry(net, a, forces=forces) for a in samples[:n_struct]]
            row["jacobian_asymmetry"] = float(np.mean(lam))
            row["jacobian_structures"] = len(lam)
        if timing:
            row.update(_force_call_times(net, atoms0, forces))
        rows.append(row)
    return rows


def _force_call_times(net, atoms, forces: str) -> dict:
    """ms of the force call the model integrates with; for a "both" model also the other
    head's, and their ratio (direct over conservative on identical features)."""
    t = M.time_force_call(net, atoms, forces=forces)
    out = {"force_call_ms": 1e3 * t}
    if net.force_head == "both":
        other = "conservative" if forces == "direct" else "direct"
        t2 = M.time_force_call(net, atoms, forces=other)
        out[f"{other}_call_ms_same_model"] = 1e3 * t2
        cons, direct = (t2, t) if forces == "direct" else (t, t2)
        out["direct_speedup_same_model"] = cons / direct
    return out


def summarise(rows: List[dict]) -> List[dict]:
    """Mean and standard deviation over seeds per model x system x ensemble x dt."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault(RunKey.of_row(r)[:4], []).append(r)  # all but the seed
    out = []
    numeric = ["drift_meV_atom_ps", "fluct_meV_atom", "max_dev_meV_atom", "T_mean", "T_error",
               "ke_ks",
               "rdf_error", "steps_per_s", "speedup"]
    for (model, system, ensemble, dt), rs in groups.items():
        s = {"model": model, "forces": rs[0]["forces"], "system": system, "ensemble": ensemble,
             "dt_fs": dt, "seeds": len(rs),
             "ran": sum(r["status"] in ("ok", "failed") for r in rs),
             "failed": sum(r["status"] == "failed" for r in rs)}
        for k in numeric:
            vals = np.array([r[k] for r in rs if isinstance(r.get(k), (int, float))
                             and np.isfinite(r[k])], dtype=np.float64)
            s[k] = float(vals.mean()) if len(vals) else float("nan")
            s[k + "_std"] = float(vals.std()) if len(vals) > 1 else float("nan")
        # time to failure: the failure time of failed seeds; survived seeds count with the
        # full simulated time (a lower bound, flagged by the "failed" count)
        ttf = [r["failure_time_ps"] if r["status"] == "failed" else r["simulated_ps"]
               for r in rs if r["status"] in ("ok", "failed")]
        s["time_to_failure_ps"] = float(np.mean(ttf)) if ttf else float("nan")
        s["simulated_ps"] = float(np.mean([r["simulated_ps"] for r in rs
                                           if isinstance(r.get("simulated_ps"), float)]
                                          or [float("nan")]))
        out.append(s)
    return out


def finite(x) -> bool:
    """A finite int or float (not None, not a string, not NaN or inf)."""
    return isinstance(x, (int, float)) and math.isfinite(x)

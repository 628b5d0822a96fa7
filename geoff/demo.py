"""The end-to-end demo (what `make demo` runs), on an embedded default: FCC copper with EMT.

1. generates Cu reference data with ASE's EMT (MD at 300–1500 K, strained, vacancy cells);
2. trains a SchNet with both force heads on it (conservative F = -dE/dx and a direct
   vector head on the same features) and reports held-out test MAEs;
3. runs a 2 ps NVE trajectory (64 atoms, 1 fs) with the conservative forces and prints the
   total-energy drift in meV/atom/ps;
4. runs a small stability study — conservative vs direct vs multiple time stepping — and
   writes its report (markdown with plots).

Everything lands in ``--out`` (default ``demo-output/``), with ``report.md`` on top.
``--quick`` shrinks every step to a smoke test of the whole pipeline (about a minute).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CONFIGS = Path(__file__).parent / "md" / "configs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--n", type=int, default=500, help="Cu EMT structures to generate (default 500)")
    p.add_argument("--train-minutes", type=float, default=4.0,
                   help="wall-clock budget of the training, minutes (default 4)")
    p.add_argument("--nve-ps", type=float, default=2.0, help="length of the NVE run, ps (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes everywhere: checks the pipeline, not the physics")
    p.add_argument("--seed", type=int, default=0)


def _line(text: str) -> None:
    print(f"[geoff demo] {text}", flush=True)


def run(args) -> int:
    import torch
    from ase.build import bulk

    from .data import generate
    from .md.metrics import energy_drift
    from .md.runners import run_md
    from .md.stability import run_study
    from .training import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    t_start = time.perf_counter()
    timings = {}

    # 1. data ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    n = 24 if quick else args.n
    data_path = out / "cu-emt.extxyz"
    _line(f"1/4 generating {n} Cu EMT structures -> {data_path}")
    generate("cu-emt", n=n, seed=args.seed, path=data_path, progress=True)
    timings["data_s"] = time.perf_counter() - t0

    # 2. training --------------------------------------------------------------------------
    t0 = time.perf_counter()
    _line("2/4 training SchNet (conservative + direct heads on shared features)")
    result = train(
        data=str(data_path), model="schnet", force_head="both", cutoff=4.5,
        hparams={"n_features": 16 if quick else 32, "n_layers": 2 if quick else 3,
                 "n_rbf": 24},
        epochs=2 if quick else 15, max_time=0.0 if quick else args.train_minutes,
        scheduler="cosine", min_lr=1e-4, out=str(out / "train"), seed=args.seed,
        overwrite=True,
    )
    timings["train_s"] = time.perf_counter() - t0
    checkpoint = str(Path(result["best_checkpoint"]).resolve())
    test = result["test_metrics"] or {}
    _line("test set (held out, float64): "
          + ", ".join(f"{k} = {v:.2f}" for k, v in test.items() if "mae" in k))

    # 3. NVE -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 4)  # 64 atoms
    steps = 50 if quick else int(round(args.nve_ps * 1000))
    _line(f"3/4 NVE: {len(atoms)} atoms, dt = 1 fs, {steps} steps, start at 600 K")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-atom cell is faster on one thread
    nve = run_md(checkpoint, atoms, output=out / "nve", ensemble="nve", temperature_K=600.0,
                 timestep_fs=1.0, steps=steps, seed=args.seed, log_every=10, traj_every=50,
                 forces="conservative", dtype="float64")
    torch.set_num_threads(threads)
    drift = energy_drift(nve.thermo["time_ps"], nve.thermo["etot"], nve.n_atoms)
    timings["nve_s"] = time.perf_counter() - t0
    status = f"failed at step {nve.failure.step}: {nve.failure.reason}" if nve.failed else "ok"
    _line(f"NVE {status}; energy drift {drift:+.2e} meV/atom/ps, "
          f"{nve.steps_per_s:.0f} steps/s")

    # 4. stability study -------------------------------------------------------------------
    t0 = time.perf_counter()
    _line("4/4 stability study: conservative vs direct vs multiple time stepping")
    # One torch thread: small cells gain nothing from more, and lose a lot on a busy machine.
    overrides = {"threads": 1}
    if quick:
        overrides.update({"seeds": [0], "timesteps_fs": [1.0]})
        overrides["ensembles"] = [{"name": "nve-600K", "ensemble": "nve", "temperature_K": 600,
                                   "time_ps": 0.02}]
    study = run_study(CONFIGS / "demo.yaml", output=out / "stability",
                      checkpoints={"conservative": checkpoint, "direct": checkpoint,
                                   "mts": checkpoint}, overrides=overrides)
    timings["stability_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    summary = {"test_metrics": test, "nve": {"drift_meV_atom_ps": drift, "steps": nve.steps_done,
               "failure": None if not nve.failed else nve.failure.reason,
               "steps_per_s": nve.steps_per_s}, "timings_s": timings,
               "checkpoint": checkpoint, "stability_report": str(study["report"])}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    report = out / "report.md"
    report.write_text(_report(summary, result, out))
    _line(f"done in {timings['total_s'] / 60:.1f} min; report: {report}; "
          f"stability report: {study['report']}")
    return 0


def _report(summary: dict, result: dict, out: Path) -> str:
    t = summary["test_metrics"]
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in t.items() if isinstance(v, float))
    curve = Path(result["learning_curve"])
    stab = Path(summary["stability_report"])
    return f"""# geoff demo report

SchNet (conservative + direct heads) trained on Cu EMT data in
{summary['timings_s']['train_s'] / 60:.1f} min; checkpoint `{summary['checkpoint']}`.

## Held-out test metrics (float64)

| metric | value |
|---|---|
{rows}

![learning curve]({curve.relative_to(out) if curve.is_relative_to(out) else curve})

## NVE, 64 atoms, dt = 1 fs

{summary['nve']['steps']} steps, energy drift **{summary['nve']['drift_meV_atom_ps']:+.2e} meV/atom/ps**,
{summary['nve']['steps_per_s']:.0f} steps/s{'' if not summary['nve']['failure'] else ', FAILED: ' + summary['nve']['failure']}.

## Stability study

Conservative vs direct vs multiple time stepping: [{stab.relative_to(out) if stab.is_relative_to(out) else stab}]({stab.relative_to(out) if stab.is_relative_to(out) else stab}).

Timings (s): {', '.join(f'{k} {v:.0f}' for k, v in summary['timings_s'].items())}
"""

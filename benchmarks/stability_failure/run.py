"""The failure study of issue 16, from data to report, in one script.

  python benchmarks/stability_failure/run.py all --out OUT --pilot    # the CPU pilot
  python benchmarks/stability_failure/run.py {data,train,study,collect,report} --out OUT
  python benchmarks/stability_failure/run.py {train-jobs,md-jobs} --out OUT --gpus 2 ...
  benchmarks/stability_failure/gpu_call.sh {call1,call2}             # the GPU study

Stages (each skips what OUT already holds, so a stopped study resumes):

* ``data`` (here, on a CPU: xTB and LAMMPS are not on the GPU machine): ``geoff data`` per
  system (``systems[].data``), gzip'd into ``--data-dir`` (committed:
  ``benchmarks/stability_failure/data/``), the start structure, and for a liquid the
  reference RDF of a Mendelev EAM run (``<system>.rdf_ref.json``);
* ``train``: every model x head x budget (``geoff train``, same split and schedule), one
  after the other; ``train-jobs`` prints the same as shell lines for ``gpu_call.sh call1``
  (budgets from ``costs.json``: see ``jobs.py``);
* ``study``: per system and budget, one ``geoff stability`` config (``study/<system>-
  <budget>/config.yaml``) with every checkpoint, an NVT (Bussi) run and an NVE leg, the seeds
  batched as replicas, the system's failure criteria (molecules: Fu et al.'s bond criterion;
  the liquid: an atom floor and a temperature runaway); run in this process; ``md-jobs``
  writes the configs and prints one ``--only <checkpoint>`` process per line instead;
* ``collect``: ``geoff stability --report-only`` per study folder (its results.csv);
* ``report``: time to failure of every run (for the liquid also the first RDF window whose
  error passes the threshold), joined with each checkpoint's test force MAE:
  ``OUT/report/failure.csv`` (every run), ``headline.csv`` / ``report.md`` (per model, head
  and budget) and ``failure_vs_mae.png`` (median time to failure against force MAE).
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jobs import md_jobs, md_jobs_until, read_costs, train_jobs  # noqa: E402
from merge import merged_report, rerun_studies  # noqa: E402
from report import rows_from_csv, write_report, write_tables  # noqa: E402


def load(path: Path, pilot: bool, systems=None) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    if pilot:
        over = cfg.pop("pilot")
        # pilot systems run only when --systems names them (the CPU dry run of call 3)
        optional = over.pop("optional_systems", None) or []
        if systems:
            over["systems"] = over["systems"] + [s for s in optional if s["name"] in systems]
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict) and key != "models":
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
    cfg.pop("pilot", None)
    if systems:
        unknown = sorted(set(systems) - {s["name"] for s in cfg["systems"]})
        if unknown:
            raise ValueError(f"--systems: no system {unknown} in the config")
        cfg["systems"] = [s for s in cfg["systems"] if s["name"] in systems]
    return cfg


def data_file(data_dir: Path, system: str) -> Path:
    return Path(data_dir) / f"{system}.extxyz.gz"


def start_file(data_dir: Path, system: str) -> Path:
    return Path(data_dir) / f"{system}.start.extxyz"


def rdf_file(data_dir: Path, system: str) -> Path:
    return Path(data_dir) / f"{system}.rdf_ref.json"


def geoff(*args: str) -> None:
    cmd = [sys.executable, "-m", "geoff.cli", *map(str, args)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def checkpoints(cfg: dict):
    """[(label, model, head, forces)] of every trained model the study runs."""
    out = [(f"{m}-conservative", m, "conservative", "conservative")
           for m in cfg["models"]["conservative"]]
    for m, heads in (cfg["models"].get("extra_heads") or {}).items():
        for head in heads:
            out.append((f"{m}-{head}", m, head, "mts" if head == "both" else head))
    return out



# --------------------------------------------------------------------------------------------
def stage_data(cfg: dict, out: Path, data_dir: Path) -> None:
    import gzip
    import shutil
    import tempfile

    import ase.io

    data_dir.mkdir(parents=True, exist_ok=True)
    for system in cfg["systems"]:
        data = data_file(data_dir, system["name"])
        if not data.exists():
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / f"{system['name']}.extxyz"
                geoff("data", *system["data"], "-o", raw, "--seed", "0", "--quiet")
                with open(raw, "rb") as src, gzip.open(data, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                shutil.copy(raw.with_suffix(".provenance.json"),
                            data_dir / f"{system['name']}.provenance.json")
        start = start_file(data_dir, system["name"])
        if not start.exists():
            ase.io.write(start, start_structure(system["start"], data))
        if system.get("rdf") and not rdf_file(data_dir, system["name"]).exists():
            reference_rdf(system, start, rdf_file(data_dir, system["name"]), data)


def start_structure(spec: dict, data: Path):
    import ase.io

    if "molecule" in spec:
        from geoff.data.molecule_xtb import build_molecule

        atoms = build_molecule(spec["molecule"])
        atoms.pbc = False
        return atoms
    for atoms in ase.io.iread(data):
        if float(atoms.info.get("temperature_K", 0)) >= spec["liquid_frame_min_K"]:
            atoms.calc = None
            return atoms
    raise ValueError(f"no frame of {data} at >= {spec['liquid_frame_min_K']} K")


def reference_rdf(system: dict, start: Path, path: Path, data: Path) -> None:
    """g(r) of the reference potential at the system's temperature, as JSON (r, g, how it was
    made): ``rdf.reference: {data_at_K: T}`` from the data's own frames at T (the reference
    potential made them), or ``{name, steps, every}`` from a Bussi NVT run of that
    ``geoff.md.references`` potential from the start structure (first third dropped)."""
    import ase.io

    from geoff.md.metrics import rdf

    spec = system["rdf"]
    ref = spec["reference"]
    if "data_at_K" in ref:
        frames = [a for a in ase.io.iread(data)
                  if abs(float(a.info.get("temperature_K", -1)) - ref["data_at_K"]) < 1.0]
        steps = 0
    else:
        frames, steps = _reference_run(system, ref, start)
    r, g = rdf(frames, spec.get("r_max", 6.0), spec.get("n_bins", 120))
    path.write_text(json.dumps({"reference": ref, "temperature_K": system["temperature_K"],
                                "frames": len(frames), "steps_done": steps, "r": r.tolist(),
                                "g": g.tolist()}, indent=1) + "\n")


def _reference_run(system: dict, ref: dict, start: Path):
    import ase.io

    from geoff.md import FailureCriteria, MDSettings, run_md
    from geoff.md.settings import Reference

    s = MDSettings(ensemble="bussi", temperature_K=system["temperature_K"],
                   timestep_fs=system["dt_fs"], steps=int(ref["steps"]), tau_fs=100.0, seed=0,
                   log_every=ref["every"], traj_every=ref["every"],
                   failure=FailureCriteria(max_force=None, temperature_factor=None))
    result = run_md(Reference(ref["name"], dict(ref.get("options") or {})), ase.io.read(start), s)
    return result.frames[len(result.frames) // 3:], result.steps_done


def stage_train(cfg: dict, out: Path, data_dir: Path, costs) -> None:
    for line in train_jobs(cfg, out, data_dir, checkpoints(cfg), 0, costs):
        print("+", line, flush=True)
        subprocess.run(line, shell=True, check=True)


# --------------------------------------------------------------------------------------------
def stability_config(cfg: dict, system: dict, budget: str, out: Path, data_dir: Path) -> dict:
    """The ``geoff stability`` config of one system and training budget."""
    models = []
    for label, model, head, forces in checkpoints(cfg):
        row = {"name": f"{label}-{budget}", "forces": forces,
               "checkpoint": str(out / "train" / system["name"] / f"{label}-{budget}" /
                                 "best.ckpt")}
        if forces == "mts":
            row["mts_steps"] = cfg["models"].get("mts_steps", 4)
        models.append(row)
    T = system["temperature_K"]
    nvt = {"name": "nvt", "temperature_K": T, **system["nvt"]}
    nve = {"name": "nve", "ensemble": "nve", "temperature_K": T, **system["nve"]}
    return {"name": f"{cfg['name']}-{system['name']}-{budget}", "models": models,
            "systems": [{"name": system["name"],
                         "structure": {"file": str(start_file(data_dir, system["name"]))}}],
            "ensembles": [nvt, nve], "timesteps_fs": [system["dt_fs"]],
            "seeds": cfg["seeds"], "replicas": True, "device": cfg["device"],
            "dtype": cfg["dtype"], "md": {**cfg["report"]["md"], **(cfg.get("md") or {}),
                                         **(system.get("md") or {})},
            "failure": system.get("failure") or {},
            "analysis": {"jacobian_structures": 1, "reference_runs": False,
                         "rdf_r_max": (system.get("rdf") or {}).get("r_max", 6.0)}}


def write_studies(cfg: dict, out: Path, data_dir: Path) -> list:
    """[(config path, folder, [model names])] of every system and budget; writes the configs."""
    studies = []
    for system in cfg["systems"]:
        for budget in cfg["train"]["budgets"]:
            folder = out / "study" / f"{system['name']}-{budget}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "config.yaml"
            config = stability_config(cfg, system, budget, out, data_dir)
            path.write_text(yaml.safe_dump(config))
            studies.append((path, folder, [m["name"] for m in config["models"]]))
    return studies


def stage_study(cfg: dict, out: Path, data_dir: Path) -> None:
    for path, folder, _ in write_studies(cfg, out, data_dir):
        geoff("stability", path, "--out", folder, "--resume", "--no-progress")


def stage_collect(cfg: dict, out: Path, data_dir: Path) -> None:
    """``geoff stability --report-only`` of every study folder, all at once (a GPU call has
    cores to spare and little time)."""
    procs = []
    for path, folder, _ in write_studies(cfg, out, data_dir):
        cmd = [sys.executable, "-m", "geoff.cli", "stability", str(path), "--out", str(folder),
               "--report-only", "--no-progress"]
        print("+", " ".join(cmd), flush=True)
        procs.append(subprocess.Popen(cmd))
    failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise RuntimeError(f"collect failed: {failed}")


def wait_for_training(out: Path, studies: list, trained) -> dict:
    """{model name: its training run's summary.json} of the ``studies``' models whose run is
    listed in the file ``trained`` (``<system>/<label>-<budget>`` lines), or {}."""
    if not trained:
        return {}
    runs = set(Path(trained).read_text().split())
    wait = {}
    for config, folder, name in studies:
        system = yaml.safe_load(Path(config).read_text())["systems"][0]["name"]
        if f"{system}/{name}" in runs:
            wait[name] = out / "train" / system / name / "summary.json"
    return wait


def call3_plan(cfg: dict, block: str = "call3") -> str:
    """``gpu_call.sh call3``'s (or ``call4``'s) plan (the config's ``call3:`` / ``call4:``
    block) as shell assignments: the stages as ``study:nice`` words, only the studies of the
    config's systems."""
    import shlex

    plan = cfg[block]
    names = [s["name"] for s in cfg["systems"]]
    studies = {f"{s}-{b}" for s in names for b in cfg["train"]["budgets"]}

    def stage(key):
        return " ".join(f"{k}:{int(v)}" for k, v in (plan.get(key) or {}).items()
                        if k in studies)
    return "\n".join(f"PLAN_{k.upper()}={shlex.quote(str(v))}" for k, v in {
        "deadline_s": int(plan["deadline_s"]), "train_until_s": int(plan["train_until_s"]),
        "report_s": int(plan["report_s"]), "stage_a": stage("stage_a"),
        "stage_b": stage("stage_b"), "stage_c": stage("stage_c"),
        "systems": " ".join(names)}.items())


# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["all", "data", "train", "study", "collect", "report",
                                     "train-jobs", "md-jobs", "call3-plan", "call4-plan"])
    p.add_argument("--config", default=str(HERE / "study.yaml"))
    p.add_argument("--out", required=True)
    p.add_argument("--pilot", action="store_true", help="the config's CPU pilot")
    p.add_argument("--data-dir", default=None,
                   help="data, start structures, reference RDFs (default: this folder's data/; "
                        "the pilot's: OUT/data)")
    p.add_argument("--systems", nargs="+", default=None, help="only these systems")
    p.add_argument("--costs", default=str(HERE / "costs.json"), help="costs.py's output")
    p.add_argument("--gpus", type=int, default=0, help="*-jobs: CUDA devices to spread over")
    p.add_argument("--seconds", type=float, default=420.0,
                   help="md-jobs: wall seconds of every MD process from now")
    p.add_argument("--device", default=None, help="override the config's device")
    p.add_argument("--missing-only", action="store_true",
                   help="train-jobs: only runs without a checkpoint (reuse an earlier call's)")
    p.add_argument("--studies", nargs="+", default=None,
                   help="md-jobs: only these study folders (e.g. ethanol-long)")
    p.add_argument("--until", type=float, default=None,
                   help="md-jobs: every process stops by this Unix time (jobs.md_jobs_until)")
    p.add_argument("--nice", type=int, default=0, help="md-jobs --until: CPU priority")
    p.add_argument("--wait-for", default=None,
                   help="md-jobs --until: a file of <system>/<run> lines being trained now: "
                        "their MD waits for the run's summary.json (or --wait-until)")
    p.add_argument("--wait-until", type=float, default=None,
                   help="md-jobs --wait-for: Unix time at which to stop waiting")
    p.add_argument("--cuda-graphs", default=None, choices=["auto", "true", "false"],
                   help="md-jobs: override the config's md.cuda_graphs")
    p.add_argument("--from-csv", default=None,
                   help="report: redo the tables in OUT from this failure.csv alone")
    p.add_argument("--rerun-from", default=None,
                   help="md-jobs: only the checkpoints this earlier call's failure.csv left "
                        "unfinished (merge.to_rerun: call 4)")
    p.add_argument("--merge-with", default=None,
                   help="report: merge this run's rows into this earlier call's failure.csv "
                        "(merge.merge_rows: call 4 into call 3)")
    p.add_argument("--no-rdf", action="store_true",
                   help="report: without the liquid's RDF criterion (no trajectory is read)")
    p.add_argument("--calls", nargs=2, default=["3", "4"], metavar=("EARLIER", "THIS"),
                   help="report --merge-with: the labels of the two calls' rows (column call)")
    p.add_argument("--workers", type=int, default=1,
                   help="report: processes reading the liquid's trajectories (RDF criterion)")
    args = p.parse_args(argv)
    cfg = load(Path(args.config), args.pilot, args.systems)
    if args.device:
        cfg["device"] = args.device
    if args.no_rdf:  # the report's fast fallback: the RDF criterion reads every trajectory
        for system in cfg["systems"]:
            system.pop("rdf", None)
    if args.cuda_graphs:
        cfg["md"] = {**(cfg.get("md") or {}),
                     "cuda_graphs": {"true": True, "false": False}.get(args.cuda_graphs,
                                                                       args.cuda_graphs)}
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir or (out / "data" if args.pilot else HERE / "data")).resolve()
    costs = read_costs(Path(args.costs))
    if args.stage in ("call3-plan", "call4-plan"):
        print(call3_plan(cfg, args.stage.split("-")[0]))
        return 0
    if args.stage == "train-jobs":
        print("\n".join(train_jobs(cfg, out, data_dir, checkpoints(cfg), args.gpus, costs,
                                   missing_only=args.missing_only)))
        return 0
    if args.stage == "md-jobs":
        studies = [(c, f, name) for c, f, names in write_studies(cfg, out, data_dir)
                   for name in names if args.studies is None or f.name in args.studies]
        if args.rerun_from:
            studies = rerun_studies(cfg, studies, Path(args.rerun_from))
        if args.until:
            wait = wait_for_training(out, studies, args.wait_for)
            lines = md_jobs_until(cfg, studies, args.gpus, args.until, args.nice,
                                  wait_for=wait, wait_until=args.wait_until)
        else:
            lines = md_jobs(cfg, studies, args.gpus, args.seconds)
        if lines:  # none: no empty line (the job file counts its lines as processes)
            print("\n".join(lines))
        return 0
    (out / "study_config.json").write_text(json.dumps(copy.deepcopy(cfg), indent=1))
    stages = ["data", "train", "study", "collect", "report"] if args.stage == "all" \
        else [args.stage]
    for stage in stages:
        print(f"== {stage}", flush=True)
        if stage == "report" and args.from_csv:  # a report redone from a failure.csv alone
            print(write_tables(cfg, out, rows_from_csv(Path(args.from_csv))))
        elif stage == "report" and args.merge_with:  # call 4's runs merged into call 3's
            print(merged_report(cfg, out, checkpoints(cfg), data_dir, Path(args.merge_with),
                                args.calls, args.workers, rdf=not args.no_rdf))
        elif stage == "report":
            print(write_report(cfg, out, checkpoints(cfg), data_dir, args.workers))
        elif stage == "train":
            stage_train(cfg, out, data_dir, costs)
        else:
            {"data": stage_data, "study": stage_study, "collect": stage_collect}[stage](
                cfg, out, data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

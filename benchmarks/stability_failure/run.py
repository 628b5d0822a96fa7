"""The failure study of issue 16, from data to report, in one script.

  python benchmarks/stability_failure/run.py all --out OUT            # the study (GPU)
  python benchmarks/stability_failure/run.py all --out OUT --pilot    # the CPU pilot
  python benchmarks/stability_failure/run.py {data,train,study,report} --out OUT [--pilot]

Stages (each skips what OUT already holds, so a stopped study resumes):

* ``data``: ``geoff data`` per system (study.yaml ``systems[].data``) and its start structure;
* ``train``: every model x head x budget (``geoff train``, same split and schedule);
* ``study``: per system and budget, one ``geoff stability`` config with every checkpoint, an
  NVT run and an NVE leg per seed, the seeds batched as replicas (``replicas: true``), the
  system's failure criteria (molecules: Fu et al.'s bond criterion; the liquid: an atom floor
  and a temperature runaway);
* ``report``: time to failure of every run (for the liquid also the first 5 ps window whose
  RDF error passes the threshold), joined with each checkpoint's test force MAE:
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

from report import write_report  # noqa: E402


def load(path: Path, pilot: bool) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    if pilot:
        over = cfg.pop("pilot")
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict) and key != "models":
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
    cfg.pop("pilot", None)
    return cfg


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
def stage_data(cfg: dict, out: Path) -> None:
    import ase.io

    for system in cfg["systems"]:
        data = out / "data" / f"{system['name']}.extxyz"
        if not data.exists():
            data.parent.mkdir(parents=True, exist_ok=True)
            geoff("data", *system["data"], "-o", data, "--seed", "0")
        start = out / "data" / f"{system['name']}.start.extxyz"
        if not start.exists():
            ase.io.write(start, start_structure(system["start"], data))


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


def stage_train(cfg: dict, out: Path) -> None:
    t = cfg["train"]
    for system in cfg["systems"]:
        data = out / "data" / f"{system['name']}.extxyz"
        for label, model, head, _ in checkpoints(cfg):
            for budget, flags in t["budgets"].items():
                run = out / "train" / system["name"] / f"{label}-{budget}"
                if (run / "test_metrics.json").exists():
                    continue
                hp = (t.get("hparams") or {}).get(model)
                geoff("train", "--data", data, "--model", model, "--force-head", head,
                      "--device", cfg["device"], *t["flags"], *flags,
                      *(["--hparams", *hp] if hp else []), "--out", run, "--overwrite")


# --------------------------------------------------------------------------------------------
def stability_config(cfg: dict, system: dict, budget: str, out: Path) -> dict:
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
                         "structure": {"file": str(out / "data" /
                                                   f"{system['name']}.start.extxyz")},
                         "reference": system.get("reference")}],
            "ensembles": [nvt, nve], "timesteps_fs": [system["dt_fs"]],
            "seeds": cfg["seeds"], "replicas": True, "device": cfg["device"],
            "dtype": cfg["dtype"], "md": dict(cfg["report"]["md"]),
            "failure": system.get("failure") or {},
            "analysis": {"jacobian_structures": 1,
                         "rdf_r_max": (system.get("rdf") or {}).get("r_max", 6.0)}}


def stage_study(cfg: dict, out: Path) -> None:
    for system in cfg["systems"]:
        for budget in cfg["train"]["budgets"]:
            folder = out / "study" / f"{system['name']}-{budget}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "config.yaml"
            path.write_text(yaml.safe_dump(stability_config(cfg, system, budget, out)))
            geoff("stability", path, "--out", folder, "--resume", "--no-progress")


# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["all", "data", "train", "study", "report"])
    p.add_argument("--config", default=str(HERE / "study.yaml"))
    p.add_argument("--out", required=True)
    p.add_argument("--pilot", action="store_true", help="the config's CPU pilot")
    args = p.parse_args(argv)
    cfg = load(Path(args.config), args.pilot)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "study_config.json").write_text(json.dumps(copy.deepcopy(cfg), indent=1))
    stages = ["data", "train", "study", "report"] if args.stage == "all" else [args.stage]
    for stage in stages:
        print(f"== {stage}", flush=True)
        if stage == "report":
            print(write_report(cfg, out, checkpoints(cfg)))
        else:
            {"data": stage_data, "train": stage_train, "study": stage_study}[stage](cfg, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

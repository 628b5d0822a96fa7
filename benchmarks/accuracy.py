"""Accuracy benchmark: every registered geoff model, and MACE from the ``mace-torch`` package as
the outside reference, trained on the same splits of the four reference data sets.

    python benchmarks/accuracy.py prepare  --data-dir DATA --out runs/accuracy
    python benchmarks/accuracy.py commands --out runs/accuracy --device cuda --minutes 6 > jobs.txt
    xargs -P 12 -d '\\n' -I{} sh -c '{}' < jobs.txt         # or run the lines one by one
    python benchmarks/accuracy.py table    --out runs/accuracy > benchmarks/accuracy.md

DATA holds ``cu-emt.extxyz``, ``cuzr-eam.extxyz``, ``ethanol.extxyz`` and ``aspirin.extxyz``
(``geoff data``; sizes and seeds in ``benchmarks/accuracy.md``). ``prepare`` draws one seeded
train/validation/test split per data set and writes it twice: as plain extxyz for geoff and with
``REF_energy``/``REF_forces`` keys for mace-torch. Each geoff job is ``geoff train`` with a
wall-clock budget (``--minutes``); each mace-torch job is mace-torch's own trainer
(``mace.cli.run_train``) run through ``mace_job`` below, which stops it at the same wall clock
and then has mace-torch evaluate its best checkpoint on the test split. Both report
the test MAE of the energy per atom and of the force components, in float64 for geoff and in
mace-torch's own evaluation for MACE.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

DATASETS = {
    # name: (file, cutoff Å, batch size, split sizes (train, val, test))
    "cu-emt": ("cu-emt.extxyz", 5.0, 8, (800, 100, 100)),
    # 7.6 Å = the cutoff of the Mendelev EAM itself: at 6 Å every model stalled at a force MAE
    # of 56-70 meV/Å (the pair and density tails between 6 and 7.6 Å are out of reach)
    # batch 2: ~110 neighbours per atom make a 200-atom cell a big graph; 9 of these jobs
    # share one GPU's memory in gpu_jobs.sh
    "cuzr-eam": ("cuzr-eam.extxyz", 7.6, 2, (240, 30, 30)),
    "ethanol": ("ethanol.extxyz", 5.0, 8, (800, 100, 100)),
    "aspirin": ("aspirin.extxyz", 5.0, 8, (800, 100, 100)),
}
# DimeNet++ builds ~2.3 million triplets per 200-atom CuZr cell at 7.6 Å: one cell per step
BATCH = {("cuzr-eam", "dimenet"): 1, ("cuzr-eam", "gemnet"): 1, ("cuzr-eam", "gemnet-q"): 1}
MODELS = ["schnet", "dimenet", "painn", "egnn", "nequip", "mace", "faenet", "symgnn", "gemnet",
          "gemnet-q"]
# Runs of a registered model with other hyper-parameters: run name -> (model, --hparams).
VARIANTS = {"gemnet-q": ("gemnet", ["quadruplets=true"]),
            "gemnet-q3": ("gemnet", ["quadruplets=true", "quadruplet_cutoff=3.0"])}
SPLIT_SEED = 0
# mace-torch's model for the side-by-side row: the MACE paper's small setting (2 layers,
# 64 channels, L=1 messages, correlation 3), close to our `mace` defaults in size.
MACE_TORCH_ARGS = ["--model", "MACE", "--num_interactions", "2", "--num_channels", "64",
                   "--max_L", "1", "--correlation", "3", "--E0s", "average", "--ema",
                   "--ema_decay", "0.99", "--lr", "0.01", "--forces_weight", "100",
                   "--energy_weight", "1", "--error_table", "PerAtomMAE",
                   "--default_dtype", "float64", "--scheduler_patience", "5", "--patience", "30"]


def prepare(data_dir: Path, out: Path) -> None:
    import numpy as np
    from ase.io import read, write

    for name, (fname, _, _, sizes) in DATASETS.items():
        src = data_dir / fname
        if not src.exists():
            print(f"skip {name}: {src} not found (make it with `geoff data`)", file=sys.stderr)
            continue
        frames = read(src, ":")
        if sum(sizes) > len(frames):
            raise SystemExit(f"{src} has {len(frames)} frames; the split needs {sum(sizes)}")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(frames))
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        start = 0
        for split, n in zip(("train", "val", "test"), sizes):
            part = [frames[i] for i in order[start:start + n]]
            start += n
            write(d / f"{split}.extxyz", part)
            write(d / f"{split}.mace.extxyz", [_mace_frame(a) for a in part])
        print(f"{name}: {sizes} frames -> {d}", file=sys.stderr)


def _mace_frame(atoms):
    """A copy with the labels under mace-torch's REF_* keys (no calculator)."""
    from ase import Atoms

    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info["REF_energy"] = atoms.get_potential_energy()
    out.arrays["REF_forces"] = atoms.get_forces()
    if atoms.pbc.all():
        try:
            out.info["REF_stress"] = atoms.get_stress(voigt=False)
        except Exception:  # no stress label: nothing to copy
            pass
    return out


def commands(out: Path, device: str, minutes: float, datasets, models, mace: bool,
             python: str, mace_python: str) -> list:
    lines = []
    for name in datasets:
        _, cutoff, batch, _ = DATASETS[name]
        d = out / name
        for model in models:
            run = d / model
            registered, hparams = VARIANTS.get(model, (model, []))
            cmd = [python, "-m", "geoff.cli", "train", "--data", d / "train.extxyz",
                   "--val-data", d / "val.extxyz", "--test-data", d / "test.extxyz",
                   "--model", registered, *(["--hparams", *hparams] if hparams else []),
                   "--cutoff", cutoff,
                   "--batch-size", BATCH.get((name, model), batch),
                   "--val-batch-size", BATCH.get((name, model), batch),
                   "--epochs", 100000, "--max-time", minutes, "--early-stopping", 40,
                   "--device", device, "--num-threads", 1, "--seed", 0, "--no-progress",
                   "--out", run, "--overwrite"]
            lines.append(_line(cmd, run / "job.log"))
        if mace:
            run = d / "mace-torch"
            cmd = [python, Path(__file__).resolve(), "mace_job", "--split-dir", d,
                   "--out", run, "--cutoff", cutoff, "--batch", batch,
                   "--minutes", minutes, "--device", device, "--mace-python", mace_python]
            lines.append(_line(cmd, d / "mace-torch.log"))
    return lines


def _line(cmd, log: Path) -> str:
    log.parent.mkdir(parents=True, exist_ok=True)
    return "OMP_NUM_THREADS=1 " + " ".join(shlex.quote(str(c)) for c in cmd) + \
        f" > {shlex.quote(str(log))} 2>&1"


def mace_job(split_dir: Path, out: Path, cutoff: float, batch: int, minutes: float,
             device: str, mace_python: str) -> int:
    """Train mace-torch for at most ``minutes`` of wall clock, then evaluate its best
    checkpoint on the test split (mace-torch's own final evaluation)."""
    out.mkdir(parents=True, exist_ok=True)
    base = [mace_python, "-m", "mace.cli.run_train", "--name", "mace", "--seed", "0",
            "--train_file", split_dir / "train.mace.extxyz",
            "--valid_file", split_dir / "val.mace.extxyz",
            "--test_file", split_dir / "test.mace.extxyz",
            "--r_max", cutoff, "--batch_size", batch, "--valid_batch_size", batch,
            "--device", device, "--work_dir", out, "--num_workers", 0,
            *MACE_TORCH_ARGS]
    base = [str(b) for b in base]
    t0 = time.time()
    log = open(out / "train.out", "w")
    proc = subprocess.Popen(base + ["--max_num_epochs", "100000"], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=60.0 * minutes)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait()
    train_s = time.time() - t0
    ckpts = sorted((out / "checkpoints").glob("*_epoch-*.pt"),
                   key=lambda p: int(re.search(r"_epoch-(\d+)", p.name).group(1)))
    if not ckpts:
        print("mace-torch wrote no checkpoint", file=sys.stderr)
        return 1
    epoch = int(re.search(r"_epoch-(\d+)", ckpts[-1].name).group(1))
    # Restarting from the latest (= best: mace-torch keeps only improving checkpoints) with
    # max_num_epochs at that epoch trains nothing and runs the final evaluation.
    with open(out / "eval.out", "w") as elog:
        rc = subprocess.call(base + ["--max_num_epochs", str(epoch), "--restart_latest"],
                             stdout=elog, stderr=subprocess.STDOUT)
    from geoff.bench import device_name

    metrics = parse_mace_table((out / "eval.out").read_text() + _mace_logs(out))
    metrics.update({"best_epoch": epoch, "train_time_s": train_s, "eval_rc": rc,
                    "batch_size": batch, "cutoff": cutoff,
                    "parameters": _mace_parameters(mace_python, out / "mace.model"),
                    "device": device_name(device)})
    (out / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics))
    return 0 if "forces_mae_meV_A" in metrics else 1


def _mace_parameters(mace_python: str, model: Path):
    code = ("import sys, torch; m = torch.load(sys.argv[1], map_location='cpu', "
            "weights_only=False); print(sum(p.numel() for p in m.parameters()))")
    try:
        text = subprocess.check_output([mace_python, "-c", code, str(model)], text=True,
                                       stderr=subprocess.DEVNULL)
        return int(text.strip().splitlines()[-1])
    except (subprocess.CalledProcessError, ValueError, IndexError):
        return None


def _mace_logs(out: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((out / "logs").glob("*.log")))


def parse_mace_table(text: str) -> dict:
    """The first row of the last "Error-table on TEST" of mace-torch's PerAtomMAE output:
    | config_type | MAE E / meV / atom | MAE F / meV / A | relative F MAE % |"""
    if "Error-table on TEST" not in text:
        return {}
    section = text.rsplit("Error-table on TEST", 1)[1]
    rows = re.findall(r"^\|\s*\S+\s*\|\s*([\d.eE+-]+)\s*\|\s*([\d.eE+-]+)\s*\|", section, re.M)
    if not rows:
        return {}
    e, f = rows[0]
    return {"energy_mae_meV_atom": float(e), "forces_mae_meV_A": float(f)}


def table(out: Path, datasets, models) -> str:
    head = ("| model | " + " | ".join(f"{d} E | {d} F" for d in datasets) + " |")
    sep = "|---|" + "---|---|" * len(datasets)
    lines = [head, sep]
    info = []
    for model in models + ["mace-torch"]:
        cells = []
        for name in datasets:
            m = _metrics(out / name / model)
            if m is None:
                cells += ["—", "—"]
                continue
            cells += [f"{m['energy_mae_meV_atom']:.2f}", f"{m['forces_mae_meV_A']:.1f}"]
            info.append((model, name, m))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    detail = ["| model | data | batch | steps | epochs | train min | stopped by | parameters | device |",
              "|---|---|---|---|---|---|---|---|---|"]
    for model, name, m in info:
        detail.append(f"| {model} | {name} | {m.get('batch_size', '—')} | {m.get('steps', '—')} | "
                      f"{m.get('epochs', '—')} | {m.get('train_time_s', float('nan')) / 60:.1f} | "
                      f"{m.get('stopped_by', 'wall clock')} | {m.get('parameters', '—')} | "
                      f"{m.get('device', '—')} |")
    return "\n".join(lines) + "\n\n" + "\n".join(detail) + "\n"


def _metrics(run: Path):
    p = run / "test_metrics.json"
    if not p.exists():
        return None
    m = json.loads(p.read_text())
    if "forces_mae_meV_A" not in m:
        return None
    if run.name == "mace-torch":
        m["epochs"] = f"{m.get('best_epoch', '—')} (best)"
        return m
    summary = run / "summary.json"
    if summary.exists():
        m.update({k: v for k, v in json.loads(summary.read_text()).items() if k not in m})
    config = run / "config.yaml"
    if config.exists():
        import yaml

        m["batch_size"] = yaml.safe_load(config.read_text()).get("batch_size")
    return m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="seeded splits of the four data sets")
    a.add_argument("--data-dir", type=Path, required=True)
    a.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    a = sub.add_parser("commands", help="one shell line per training job")
    a.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    a.add_argument("--device", default="cuda")
    a.add_argument("--minutes", type=float, default=6.0, help="wall-clock budget per job")
    a.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    a.add_argument("--models", nargs="+", default=MODELS)
    a.add_argument("--no-mace", action="store_true", help="leave out the mace-torch jobs")
    a.add_argument("--python", default=sys.executable, help="interpreter with geoff")
    a.add_argument("--mace-python", default=None,
                   help="interpreter with mace-torch (default: --python)")
    a = sub.add_parser("mace_job", help="(internal) one mace-torch training + test evaluation")
    a.add_argument("--split-dir", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--cutoff", type=float, required=True)
    a.add_argument("--batch", type=int, required=True)
    a.add_argument("--minutes", type=float, required=True)
    a.add_argument("--device", default="cuda")
    a.add_argument("--mace-python", default=sys.executable,
                   help="interpreter with mace-torch installed (default: this one)")
    a = sub.add_parser("table", help="markdown table of the test metrics")
    a.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    a.add_argument("--datasets", nargs="+", default=list(DATASETS))
    a.add_argument("--models", nargs="+", default=MODELS)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.data_dir, args.out)
    elif args.cmd == "commands":
        for line in commands(args.out, args.device, args.minutes, args.datasets, args.models,
                             not args.no_mace, args.python, args.mace_python or args.python):
            print(line)
    elif args.cmd == "mace_job":
        return mace_job(args.split_dir, args.out, args.cutoff, args.batch, args.minutes,
                        args.device, args.mace_python)
    else:
        print(table(args.out, args.datasets, args.models))
    return 0


if __name__ == "__main__":
    sys.exit(main())

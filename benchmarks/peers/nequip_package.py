"""nequip 0.19's deployable artefacts for ``speed.py --peers``, made offline: a one-epoch
``nequip-train`` run at geoff's matched NequIP hyper-parameters (its ``.ckpt``), packed by
``nequip-package build`` (a ``.nequip.zip``), then ``nequip-compile --mode aotinductor
--target ase-forces`` (a ``.nequip.pt2`` for ``nequip_peer``'s ``NequIPCalculator``),
optionally with acceleration modifiers (``enable_CuEquivariance``; CUDA only).

``ase-forces`` is nequip's ``ase`` target without the stress output, registered here: the
rows time energy and forces, as geoff's do, and the stress path's ``torch.linalg.det`` has
no AOTInductor C shim in torch 2.11, so its model is run by the proxy executor, and loading
that ``.pt2`` crashed (segfault in ``aoti_load_package``) on the H200 image.

    python benchmarks/peers/nequip_package.py                       # package, float32
    python benchmarks/peers/nequip_package.py --compile cuda --modifiers enable_CuEquivariance

Run with nequip's peer folder first on ``PYTHONPATH`` (it needs ``pytorch-lightning`` and
``lmdb`` besides nequip's runtime closure, see ``peers.PACKAGES``). The training data are
nequip's own ``EMTTestDataset`` (EMT Cu frames made in process: no file, no network) and the
learning rate is 0, so the weights stay at the ``seed=0`` initialisation, like the eager row.
Artefacts go to ``$GEOFF_PEERS/nequip_models`` (default ``~/.cache/geoff-peers``); the package
is ~20 MB (2.5 M float32 weights twice: eager and compile models), too large to carry to the
GPU machine, so ``speed_gpu.sh`` rebuilds it there (~1 min on the CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# geoff's NequIP-style hyper-parameters, the ones ``nequip_peer`` matches (cutoff in Å)
MATCHED = dict(num_features=64, l_max=2, num_layers=3, num_bessels=8, r_max=5.0,
               avg_num_neighbors=42.0)
TYPE_NAMES = ["Cu", "Zr"]


def models_dir() -> Path:
    root = Path(os.environ.get("GEOFF_PEERS", Path.home() / ".cache" / "geoff-peers"))
    return root / "nequip_models"


def _tag(hyper: dict) -> str:
    """A file-name tag of the hyper-parameters that differ from MATCHED ('' when none)."""
    diff = {k: v for k, v in hyper.items() if MATCHED.get(k) != v}
    return "".join(f"-{k}{v}" for k, v in sorted(diff.items()))


def train_config(dtype: str, hyper: dict) -> dict:
    """The ``nequip-train`` config (hydra/omegaconf; JSON is valid YAML): one epoch on four
    2x2x2 EMT Cu frames, learning rate 0; per-type shifts/scales and the neighbour count are
    fixed (not fitted) so that the model equals ``NequIPGNNModel(seed=0, ...)``."""
    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": 1}
    transforms = [
        {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
         "model_type_names": TYPE_NAMES,
         "chemical_species_to_atom_type_map": {s: s for s in TYPE_NAMES}},
        {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": hyper["r_max"]}]
    dataset = {"_target_": "nequip.data.dataset.EMTTestDataset", "transforms": transforms,
               "supercell": [2, 2, 2], "seed": 0, "num_frames": 4, "element": "Cu"}
    model = {"_target_": "nequip.model.NequIPGNNModel", "seed": 0, "model_dtype": dtype,
             "type_names": TYPE_NAMES, "per_type_energy_shifts": 0.0,
             "per_type_energy_scales": 1.0, **hyper}
    return {
        "run": ["train"],
        "data": {"_target_": "nequip.data.datamodule.NequIPDataModule", "seed": 0,
                 "split_dataset": {"dataset": dataset, "train": 2, "val": 2},
                 "train_dataloader": loader, "val_dataloader": loader},
        "trainer": {"_target_": "lightning.Trainer", "max_epochs": 1, "accelerator": "cpu",
                    "logger": False, "enable_progress_bar": False,
                    "callbacks": [{"_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "dirpath": "${hydra:runtime.output_dir}",
                                   "filename": "last", "save_top_k": 1}]},
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                     "coeffs": {"total_energy": 1.0, "forces": 1.0}},
            "val_metrics": {"_target_": "nequip.train.EnergyForceMetrics",
                            "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0}},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.0},
            "model": model},
        "global_options": {"allow_tf32": False},
    }


FORCES_TARGET = "ase-forces"


def forces_target() -> dict:
    """nequip's ``ase`` compile target minus the stress output (see the module docstring)."""
    from nequip.data import AtomicDataDict
    from nequip.scripts._compile_utils import ASE_TARGET

    return dict(ASE_TARGET, output=[k for k in ASE_TARGET["output"]
                                    if k != AtomicDataDict.STRESS_KEY])


def register_forces_target() -> None:
    from nequip.scripts._compile_utils import register_compile_targets

    register_compile_targets({FORCES_TARGET: forces_target()})


def _nequip(script: str, *args, log: Path) -> None:
    """Run ``nequip.scripts.<script>.main`` (the ``nequip-<script>`` CLI) in a subprocess
    with this interpreter and environment, ``FORCES_TARGET`` registered; its output goes to
    ``log``."""
    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); import nequip_package; "
            f"nequip_package.register_forces_target(); "
            f"from nequip.scripts.{script} import main; main()")
    with open(log, "a") as out:
        # faulthandler: a crash in the compiler (seen on the H200 image) leaves a traceback
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code,
                               *map(str, args)], stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"nequip-{script} failed (exit {proc.returncode}); see {log}: "
                           + " / ".join(tail))


def build_package(dtype: str = "float32", hyper: dict | None = None,
                  out: Path | None = None) -> Path:
    """The ``.nequip.zip`` for ``dtype`` (built once, then reused): train, then package."""
    hyper = dict(MATCHED, **(hyper or {}))
    out = Path(out or models_dir())
    name = f"nequip-cuzr-{dtype}{_tag(hyper)}"
    package = out / f"{name}.nequip.zip"
    if package.exists():
        return package
    work = out / f"{name}-train"
    shutil.rmtree(work, ignore_errors=True)  # a rerun would write last-v1.ckpt beside last.ckpt
    work.mkdir(parents=True)
    (work / "train.yaml").write_text(json.dumps(train_config(dtype, hyper), indent=1))
    log = work / "nequip.log"
    _nequip("train", "-cp", work.resolve(), "-cn", "train",
            f"hydra.run.dir={work.resolve() / 'run'}", log=log)
    partial = out / f"{name}.partial.nequip.zip"  # a killed run leaves no half package
    _nequip("package", "build", work / "run" / "last.ckpt", partial, log=log)
    partial.rename(package)
    return package


def compiled_path(package: Path, device: str, modifiers) -> Path:
    """Where the AOTInductor model of ``package`` for ``device`` and ``modifiers`` goes."""
    accel = "+".join(modifiers) if modifiers else "e3nn"
    stem = package.name[: -len(".nequip.zip")]
    return package.parent / f"{stem}-{device}-{accel}-{FORCES_TARGET}.nequip.pt2"


def compile_aot(package: Path, device: str, modifiers=()) -> tuple:
    """(path of the ``.nequip.pt2``, seconds ``nequip-compile`` took), compiled once and
    reused (the seconds are kept next to it in a ``.json``)."""
    target = compiled_path(package, device, modifiers)
    record = target.with_suffix(".json")
    if target.exists() and record.exists():
        return target, json.loads(record.read_text())["compile_s"]
    partial = target.with_name("partial-" + target.name)
    args = [package, partial, "--mode", "aotinductor", "--device", device,
            "--target", FORCES_TARGET]
    start = time.perf_counter()
    _nequip("compile", *args, *(["--modifiers", *modifiers] if modifiers else []),
            log=target.with_suffix(".log"))
    seconds = time.perf_counter() - start
    partial.rename(target)
    record.write_text(json.dumps({"compile_s": seconds, "device": device,
                                  "modifiers": list(modifiers)}))
    return target, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--out", type=Path, default=None, help="default $GEOFF_PEERS/nequip_models")
    parser.add_argument("--compile", metavar="DEVICE", default=None,
                        help="also nequip-compile the package for DEVICE (cpu, cuda)")
    parser.add_argument("--modifiers", nargs="*", default=[],
                        help="nequip-compile --modifiers, e.g. enable_CuEquivariance")
    parser.add_argument("--hyper", default="{}",
                        help="JSON overrides of MATCHED (tests: a tiny model)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    package = build_package(args.dtype, json.loads(args.hyper), args.out)
    print(f"package {package} ({package.stat().st_size / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.0f} s)", flush=True)
    if args.compile:
        path, seconds = compile_aot(package, args.compile, args.modifiers)
        print(f"compiled {path} ({path.stat().st_size / 1e6:.1f} MB): compile_s {seconds:.1f}")


if __name__ == "__main__":
    main()

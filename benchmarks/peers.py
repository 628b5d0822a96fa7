"""Peers for ``benchmarks/speed.py --peers``: mace-torch (and its cuEquivariance path).

Each peer is installed with ``pip install --target`` into its own folder under
``$GEOFF_PEERS`` (default ``~/.cache/geoff-peers``), without dependencies that geoff's
environment already has (torch, ase, matscipy, numpy), because mace-torch pins e3nn 0.4.4
while geoff uses a newer e3nn: the folder goes first on ``PYTHONPATH`` of a subprocess, so
each peer sees its own e3nn. schnetpack 2.2 needs Python >= 3.12 and nequip 0.19 its own
stack; they are listed as not run when they do not install.

Matched hyper-parameters (the issue's): MACE 64x0e+64x1o hidden, l_max 3, correlation 3,
2 interactions, 8 Bessel functions, cutoff 5 Å.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from speed import CUTOFF, PEERS_DIR

PEER_PACKAGES = {"mace": ["mace-torch==0.3.16", "e3nn==0.4.4", "opt_einsum", "opt-einsum-fx",
                          "torch-ema", "prettytable", "configargparse", "wcwidth", "h5py",
                          "torchmetrics", "lightning-utilities", "pandas", "pytz", "tzdata",
                          "python-dateutil", "six", "lmdb", "orjson"]}


def install(peer: str) -> bool:
    target = PEERS_DIR / peer
    if (target / ".installed").exists():
        return True
    wheels = os.environ.get("GEOFF_PEER_WHEELS")  # offline: a folder of wheels instead
    packages = sorted(glob.glob(os.path.join(wheels, "*.whl"))) if wheels \
        else PEER_PACKAGES[peer]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(target), *(["--no-index"] if wheels else []),
                           *packages], capture_output=True, text=True)
    if proc.returncode == 0:
        (target / ".installed").touch()
    else:
        print(proc.stderr[-2000:], file=sys.stderr)
    return proc.returncode == 0


def mace_model(dtype):
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.MACE(
        r_max=CUTOFF, num_bessel=8, num_polynomial_cutoff=6, max_ell=3,
        interaction_cls=block, interaction_cls_first=block, num_interactions=2,
        num_elements=2, hidden_irreps=o3.Irreps("64x0e+64x1o"), MLP_irreps=o3.Irreps("16x0e"),
        gate=torch.nn.functional.silu, atomic_energies=np.zeros(2), avg_num_neighbors=42.0,
        atomic_numbers=[29, 40], correlation=3, radial_type="bessel")
    return model.to(dtype)


def time_mace(spec: dict) -> dict:
    """One size: the model on a prepared batch and one MACECalculator call (medians, s)."""
    import torch
    from mace import data, tools
    from mace.calculators import MACECalculator
    from mace.tools import torch_geometric

    from speed import _median_time, structure

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    torch.set_default_dtype(dtype)
    dev = torch.device(spec["device"])
    model = mace_model(dtype).to(dev)
    calc = MACECalculator(models=model, device=spec["device"], default_dtype=spec["dtype"],
                          enable_cueq=spec.get("cueq", False))
    atoms = structure(spec["kind"], spec["n"])
    config = data.config_from_atoms(atoms)
    z_table = tools.AtomicNumberTable([29, 40])
    batch = next(iter(torch_geometric.dataloader.DataLoader(
        [data.AtomicData.from_config(config, z_table=z_table, cutoff=CUTOFF)], batch_size=1)))
    batch = batch.to(dev).to_dict()
    run_model = calc.models[0]
    row = {"atoms": len(atoms), "edges": int(batch["edge_index"].shape[1])}
    if dev.type == "cuda":
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    row["model_s"] = _median_time(
        lambda: run_model(dict(batch), compute_force=True)["forces"].sum().item(),
        dev, spec["repeats"], spec["budget"])
    if dev.type == "cuda":
        row["mem_bytes"] = torch.cuda.max_memory_allocated(dev) - before
    row["calc_s"] = _median_time(
        lambda: calc.calculate(atoms, ["energy", "forces"], ["positions"]),
        dev, spec["repeats"], spec["budget"])
    return row


def run_peers(args) -> str:
    lines = ["| peer | structure | dtype | atoms | edges | model ms | calc ms | atoms/s (model) |",
             "|---|---|---|---|---|---|---|---|"]
    notes = ["schnetpack: not run (2.2 needs Python >= 3.12; this environment has 3.11)",
             "nequip: not run (needs its own torch stack; not installed in this session)"]
    if not install("mace"):
        return "mace-torch did not install; peers not run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PEERS_DIR / "mace"), os.path.dirname(os.path.abspath(__file__)),
         os.environ.get("PYTHONPATH", "")]))
    for kind in args.structures:
        for dtype in args.dtypes:
            for n in args.sizes:
                spec = dict(kind=kind, n=n, dtype=dtype, device=args.device,
                            repeats=args.repeats, budget=args.budget, threads=args.threads)
                proc = subprocess.run([sys.executable, __file__, json.dumps(spec)], env=env,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    lines.append(f"| mace-torch | {kind} | {dtype} | {n} | failed: "
                                 f"{proc.stderr.strip().splitlines()[-1][:100]} | | | |")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"  mace-torch {kind} {dtype} {r}", file=sys.stderr, flush=True)
                lines.append(f"| mace-torch 0.3.16 | {kind} | {dtype} | {r['atoms']} | "
                             f"{r['edges']} | {1e3 * r['model_s']:.2f} | {1e3 * r['calc_s']:.2f}"
                             f" | {r['atoms'] / r['model_s']:.3g} |")
    return "\n".join(lines + [""] + notes)


if __name__ == "__main__":
    print(json.dumps(time_mace(json.loads(sys.argv[1]))))

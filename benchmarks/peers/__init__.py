"""Peers for ``benchmarks/speed.py --peers``: each in its own ``pip --target`` folder
(``$GEOFF_PEERS/<folder>``, default ``~/.cache/geoff-peers``) and its own subprocess, so
that none touches geoff's environment (mace-torch pins e3nn 0.4.4; geoff uses 0.6).

A folder with a ``.installed`` mark is used as it is (``benchmarks/speed_gpu.sh`` fills them
offline from ``.peers/``, see ``benchmarks/peers_wheels.sh``); otherwise it is installed
from PyPI (``--no-deps``: the packages below are the closure the runners import, found by
installing and importing; torch, numpy, scipy, ase, matscipy and e3nn's own dependencies
come from geoff's environment).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMON = ["torchmetrics==1.9.0", "lightning-utilities==0.15.3", "h5py==3.16.0",
          "omegaconf==2.3.0", "antlr4-python3-runtime==4.9.3", "torch-ema==0.3"]
PACKAGES = {
    "mace": ["mace-torch==0.3.16", "e3nn==0.4.4", "prettytable==3.18.0", "wcwidth==0.2.13",
             "configargparse==1.9.0", "lmdb==1.7.5", "orjson==3.11.3"],
    "mace_cueq": ["mace-torch==0.3.16", "e3nn==0.4.4", "prettytable==3.18.0",
                  "wcwidth==0.2.13", "configargparse==1.9.0", "lmdb==1.7.5", "orjson==3.11.3",
                  "cuequivariance==0.13.0", "cuequivariance-torch==0.13.0",
                  "cuequivariance-ops-torch-cu13==0.13.0", "cuequivariance-ops-cu13==0.13.0",
                  "platformdirs"],
    # pytorch-lightning and lmdb: for nequip-train (the package of the AOTInductor rows)
    "nequip": ["nequip==0.19.1", "lightning==2.6.6", "hydra-core==1.3.2", "requests",
               "urllib3", "idna", "certifi", "pytorch-lightning==2.6.6", "lmdb==1.7.5"],
    # 2.2 declares Python >= 3.12 but imports and runs on 3.11 (2.1.1 fails on torch >= 2.12)
    "schnetpack": ["schnetpack==2.2.0", "pytorch-lightning==2.6.6", "vesin==0.6.2",
                   "dirsync==2.2.6", "fasteners==0.20", "progressbar==2.5"],
}


@dataclass
class Peer:
    """One peer row family: ``label`` in the table, the geoff ``family`` it is matched with,
    its install ``folder``, the runner ``module`` and its ``options`` (into the spec)."""
    label: str
    family: str
    folder: str
    module: str
    options: dict = field(default_factory=dict)
    gpu_only: bool = False
    not_run: str = ""  # why this row is not measured (said in the table)
    name: str = ""  # a short name for --peers (e.g. nequip_aot)


PEERS = [
    Peer("mace-torch 0.3.16", "mace", "mace", "mace_peer"),
    Peer("mace-torch 0.3.16 + cuEq 0.13", "mace", "mace_cueq", "mace_peer", {"cueq": True},
         gpu_only=True),
    Peer("mace-torch 0.3.16, 128 ch.", "mace128", "mace", "mace_peer", {"channels": 128}),
    Peer("mace-torch 0.3.16 + cuEq 0.13, 128 ch.", "mace128", "mace_cueq", "mace_peer",
         {"cueq": True, "channels": 128}, gpu_only=True),
    # nequip at its fastest (first, so that a deadline cuts eager, not these):
    # nequip-compile --mode aotinductor of a package (nequip_package),
    # with its fastest tensor-product kernels that install offline: cuEquivariance (the
    # wheels mace_cueq uses). OpenEquivariance 0.7.0 is an sdist only, whose CMake build
    # downloads LibTorch and which JIT-builds a CUDA extension at import: not offline.
    # (Its compile_mode="compile" runs the eager model for a batch of < 2 frames: no row.)
    Peer("nequip 0.19.1 AOTInductor", "nequip", "nequip", "nequip_peer",
         {"compile": "aotinductor"}, name="nequip_aot"),
    Peer("nequip 0.19.1 AOTInductor + cuEq 0.13", "nequip", "nequip", "nequip_peer",
         {"compile": "aotinductor", "modifiers": ["enable_CuEquivariance"]}, gpu_only=True,
         name="nequip_aot_cueq"),
    Peer("nequip 0.19.1 eager", "nequip", "nequip", "nequip_peer", {"compile": "eager"},
         name="nequip_eager"),
    Peer("schnetpack 2.2.0 SchNet", "schnet", "schnetpack", "schnetpack_peer",
         {"model": "schnet"}),
    Peer("schnetpack 2.2.0 PaiNN", "painn", "schnetpack", "schnetpack_peer",
         {"model": "painn"}),
]


def peers_dir() -> Path:
    return Path(os.environ.get("GEOFF_PEERS", Path.home() / ".cache" / "geoff-peers"))


def install(folder: str) -> str | None:
    """Install a peer folder if it is not there; None when ready, else why not."""
    target = peers_dir() / folder
    if (target / ".installed").exists():
        return None
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--ignore-requires-python", "--target", str(target),
                           *PACKAGES[folder], *COMMON], capture_output=True, text=True)
    if proc.returncode != 0:
        return "did not install: " + _last_line(proc.stderr)
    (target / ".installed").touch()
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:160].replace("|", "/")


def peer_env(folder: str) -> dict:
    """The peer's folder first on PYTHONPATH, then benchmarks/ (for ``speed``)."""
    path = [str(peers_dir() / folder), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))


def peer_command(peer: Peer, spec: dict):
    """The command for ``run_sizes``: one size in a fresh runner process."""
    def command(n: int) -> list:
        return [sys.executable, str(HERE / "runner.py"),
                json.dumps(dict(spec, n=n, module=peer.module, **peer.options))]
    return command


def selected(names) -> list:
    """The peers named on the command line (any word of the label or the folder); all
    when none is named."""
    if not names:
        return list(PEERS)
    return [p for p in PEERS if any(n.lower() in (p.label.lower(), p.folder, p.family, p.name)
                                    or n.lower() in p.label.lower().split() for n in names)]

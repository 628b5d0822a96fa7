"""Does this machine's torch load and run an AOTInductor package at all?

    python benchmarks/aoti_check.py [--device cuda] [PACKAGE.pt2 ...]

Compiles a small model (an MLP over positions: per-atom energies and their sum) with ``torch._inductor.aoti_compile_and_package``, then loads and runs
it in this process and in a fresh one, and compares with eager. Each ``PACKAGE.pt2`` given
(e.g. a ``nequip-compile`` output) is loaded in a fresh process too. A segfault in a child
is reported with its signal instead of ending the check. This tells a broken torch build
(nothing loads) from a broken model package (only that one fails).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

LOAD = """
import sys, torch
model = torch._inductor.aoti_load_package(sys.argv[1])
print("loaded", sys.argv[1], flush=True)
if len(sys.argv) > 2:
    x = torch.load(sys.argv[2])
    e, ea = model(x["positions"])
    print("max |dE|", float((e - x["energy"]).abs().max()),
          "max |dE_i|", float((ea - x["energies"]).abs().max()), flush=True)
"""


class Energy(torch.nn.Module):
    """Per-atom energies (N,) of an MLP over positions (N, 3), and their sum."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(),
                                       torch.nn.Linear(64, 1))

    def forward(self, positions):
        energies = self.net(positions).squeeze(-1)
        return energies.sum(), energies


def child(*args) -> str:
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", LOAD, *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    how = "ok" if done.returncode == 0 else (
        f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}")
    return f"{how}: " + " | ".join(tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("packages", nargs="*", type=Path)
    args = parser.parse_args()
    print("torch", torch.__version__, "device", args.device, flush=True)
    torch.manual_seed(0)
    model = Energy().to(args.device)
    x = torch.randn(100, 3, device=args.device)
    dim = torch.export.Dim("atoms", min=2, max=10**7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "energy.pt2"
        try:
            exported = torch.export.export(model, (x,), dynamic_shapes=({0: dim},))
            torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
            print("compiled", path, flush=True)
        except Exception as error:  # the compile itself failing is a finding too
            print("compile failed:", type(error).__name__, str(error)[:500], flush=True)
            return
        with torch.no_grad():
            e, f = model(x.clone())
        ref = Path(tmp) / "ref.pt"
        torch.save({"positions": x, "energy": e.detach(), "energies": f.detach()}, ref)
        print("fresh process:", child(path, ref), flush=True)
        loaded = torch._inductor.aoti_load_package(str(path))
        e2, f2 = loaded(x.clone())
        print("this process: max |dE|", float((e2 - e).abs().max()),
              "max |dE_i|", float((f2 - f).abs().max()), flush=True)
    for package in args.packages:
        print(package.name, "fresh process:", child(package), flush=True)


if __name__ == "__main__":
    main()

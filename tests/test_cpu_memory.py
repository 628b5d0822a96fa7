"""geoff.cpu_memory: freed CPU tensors are reused instead of mapped (and faulted) afresh."""
import os
import subprocess
import sys

import pytest

# A force call allocates and frees the same large per-edge tensors every time: here 64 MB,
# above glibc's largest dynamic mmap threshold (32 MB), ten times.
SCRIPT = r"""
import resource, sys, torch
if sys.argv[1] == "calculator":  # the way users get it
    from geoff.calculators.ase import GeoffCalculator
    from geoff.potentials import build_model
    GeoffCalculator(build_model("schnet", species=["Cu"], cutoff=4.0))
for _ in range(2):
    torch.ones(16 << 20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20).sum()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def faults_per_alloc(how: str, keep: str = "1") -> int:
    env = dict(os.environ, GEOFF_KEEP_FREED_MEMORY=keep, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT, how], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_a_cpu_calculator_keeps_freed_memory():
    from geoff.cpu_memory import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc")
    plain = faults_per_alloc("plain")
    assert plain > 10000, plain  # 16,384 pages of 4 KB mapped and zeroed per allocation
    assert faults_per_alloc("calculator") < 100
    assert faults_per_alloc("calculator", keep="0") > 10000  # GEOFF_KEEP_FREED_MEMORY=0


def test_switched_off_by_the_environment(monkeypatch):
    import geoff.cpu_memory as cm

    monkeypatch.setattr(cm, "_done", None)
    monkeypatch.setenv("GEOFF_KEEP_FREED_MEMORY", "0")
    assert cm.keep_freed_memory() is False
    monkeypatch.setattr(cm, "_done", None)

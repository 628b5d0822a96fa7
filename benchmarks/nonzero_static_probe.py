"""Is torch.nonzero_static sync-free and capturable on CUDA (what geoff/captured_call.py needs)? And an 864-atom padded all-pairs search, eager against replayed.

    python benchmarks/nonzero_static_probe.py   (needs a CUDA device and ase)
"""
import time
import warnings

import torch
dev = "cuda"
print("torch", torch.__version__)
x = torch.rand(1000, 1000, device=dev) < 0.05
n_true = int(x.sum())
torch.cuda.synchronize()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")
    a = torch.nonzero_static(x, size=60000, fill_value=-1)
    b = torch.nonzero(x)
    torch.cuda.set_sync_debug_mode(0)
msgs = [str(m.message)[:80] for m in w if "called a synchronizing" in str(m.message)]
print("sync warnings (nonzero_static then nonzero):", len(msgs), msgs)
print("static equals nonzero on the real rows:", bool((a[:n_true] == b).all()), "padding -1:", bool((a[n_true:] == -1).all()))
# capture
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(3):
        out = torch.nonzero_static(x, size=60000, fill_value=-1)
torch.cuda.current_stream().wait_stream(s)
g = torch.cuda.CUDAGraph()
try:
    with torch.cuda.graph(g):
        out = torch.nonzero_static(x, size=60000, fill_value=-1)
    x.copy_(torch.rand(1000, 1000, device=dev) < 0.04)
    g.replay(); torch.cuda.synchronize()
    ref = torch.nonzero(x)
    print("captured replay equals nonzero:", bool((out[:len(ref)] == ref).all()), bool((out[len(ref):] == -1).all()))
except Exception as e:
    print("capture failed:", type(e).__name__, str(e)[:300])
# padded all-pairs at 864 atoms: eager vs captured
from ase.build import bulk  # noqa: E402 (after the CUDA probes)
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((6, 6, 6))
atoms.rattle(0.05, seed=0)
pos = torch.tensor(atoms.positions, device=dev, dtype=torch.float32)
cell = torch.tensor(atoms.cell.array, device=dev, dtype=torch.float64)
inv = torch.linalg.inv(cell)
cut2 = 5.5 ** 2
def search(pos, cap):
    frac = pos.double() @ inv
    d = frac[None, :, :] - frac[:, None, :]
    d = d - torch.round(d)
    v = d @ cell
    r2 = (v * v).sum(-1)
    n = len(pos)
    m = (r2 < cut2) & ~torch.eye(n, dtype=torch.bool, device=dev)
    ij = torch.nonzero_static(m, size=cap, fill_value=-1)
    return ij, m.sum()
def t(fn, k=50):
    fn(); torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(k): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t0) / k * 1e3
ij, cnt = search(pos, 60000)
print("edges", int(cnt))
print("eager padded all-pairs ms", t(lambda: search(pos, 60000)))
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(3): search(pos, 60000)
torch.cuda.current_stream().wait_stream(s)
g2 = torch.cuda.CUDAGraph()
with torch.cuda.graph(g2):
    out2 = search(pos, 60000)
print("captured padded all-pairs ms", t(lambda: g2.replay()))

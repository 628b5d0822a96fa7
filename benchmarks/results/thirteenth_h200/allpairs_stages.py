import time, numpy as np, torch, sys
sys.path.insert(0, "benchmarks")
from speed import structure
import geoff.neighbours as nl
from geoff.to_device import to_device
dev = "cuda"
atoms = structure("cu", 864)
cell_np = atoms.cell.array
x = torch.as_tensor(atoms.positions, device=dev)
def stages(periodic):
    out = {}
    def mark(name, t0):
        torch.cuda.synchronize(); t = time.perf_counter(); out[name] = (t - t0) * 1e3; return t
    torch.cuda.synchronize(); t = time.perf_counter()
    n = x.shape[0]
    xx = x.detach().to(torch.float64).unsqueeze(0)
    t = mark("prep", t)
    if periodic:
        mats = to_device(np.stack([cell_np, np.linalg.inv(cell_np)]), x.device)
        t = mark("mats", t)
        frac = nl._rows_times(xx, mats[1]); t = mark("frac", t)
        d = frac[:, None] - frac[:, :, None]; t = mark("d", t)
        near = torch.round(d); t = mark("round", t)
        r = (d - near).view(-1, 3) @ mats[0]; t = mark("matmul", t)
    else:
        r = (xx[:, None] - xx[:, :, None]).view(-1, 3); t = mark("diff", t)
    keep = (r.square().sum(-1) < 5.5 ** 2).view(1, n, n); t = mark("keep", t)
    keep.diagonal(dim1=1, dim2=2).fill_(False); t = mark("diag", t)
    total = nl._read_later(xx.sum()); t = mark("readlater", t)
    rows = keep.view(-1).nonzero().squeeze(1); t = mark("nonzero", t)
    total(); t = mark("total", t)
    return out
for periodic in (True, False):
    for _ in range(5): stages(periodic)
    runs = [stages(periodic) for _ in range(20)]
    print("periodic" if periodic else "open", {k: round(float(np.median([r[k] for r in runs])), 3) for k in runs[0]})
    f = lambda: nl.torch_neighbour_list(x, cell_np, (periodic,) * 3, 5.5)
    for _ in range(5): f()
    ts = []
    for _ in range(20):
        torch.cuda.synchronize(); t0 = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    print("  whole", round(1e3 * float(np.median(ts)), 3), "ms")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        f(); torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=40))

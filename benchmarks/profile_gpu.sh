#!/usr/bin/env bash
# One GPU call: torch-profiler tables of geoff's MACE-style model (cuEq, eager and compiled)
# and of mace-torch + cuEquivariance, one H200, the same 32k-atom Cu (benchmarks/profile_gpu.py).
#
#   OUT=$OUT bash benchmarks/profile_gpu.sh     # kind nvidia-h200, carry [".whl", ".peers"]
#
# Knobs: ATOMS (32000), PROFILES ("geoff geoff_compile peer"; also geoff_e3nn, and
# geoff_pairs / geoff_compile_pairs: the same with GeoffCalculator(edge_pairs=True)),
# MODEL (mace), DEADLINE_S (200), SHAPES (0: also the top K operators by input shapes).
# Writes $OUT/profile_<name>.txt and run.log.
TAG=profile DEFAULT_DEADLINE_S=200
source "$(dirname "$0")/gpu_call_common.sh"
cd "$(dirname "$0")/.."
trap 'pack_tables' EXIT
install_whl
install_cueq
PEER="$WORK/peers/mace_cueq"
if [[ " ${PROFILES:-peer} " == *" peer "* ]]; then
  "$V" -m pip install -q --no-deps --no-index --ignore-requires-python --target "$PEER" \
    .peers/mace/*.whl .peers/cueq/*.whl .peers/common/*.whl && tar -xJf .peers/cueq/cueq-ops.tar.xz -C "$PEER" \
    && stamp "installed mace-torch + cuEq" || stamp "FAILED: installing mace-torch + cuEq"
fi
GEOFF_PATH="$PWD:$WORK/py${PYTHONPATH:+:$PYTHONPATH}"
ATOMS=${ATOMS:-32000}
for name in ${PROFILES:-geoff geoff_compile peer}; do
  budget=$(( $(left) - 5 ))
  [ "$budget" -gt 20 ] || { stamp "skipped (deadline): $name"; continue; }
  case $name in
    geoff) args=(geoff --model "${MODEL:-mace}" --kernels cueq); path=$GEOFF_PATH ;;
    geoff_e3nn) args=(geoff --model "${MODEL:-mace}" --kernels e3nn); path=$GEOFF_PATH ;;
    geoff_compile) args=(geoff --model "${MODEL:-mace}" --kernels cueq --compile); path=$GEOFF_PATH ;;
    geoff_pairs) args=(geoff --model "${MODEL:-mace}" --kernels cueq --edge-pairs on); path=$GEOFF_PATH ;;
    geoff_compile_pairs) args=(geoff --model "${MODEL:-mace}" --kernels cueq --compile --edge-pairs on)
          path=$GEOFF_PATH ;;
    peer) args=(peer --module mace_peer --cueq)
          path="$PEER:$PWD/benchmarks/peers:$PWD/benchmarks:$WORK/py${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac
  stamp "profile $name (${budget} s at most)"
  PYTHONPATH="$path" timeout "$budget" "$V" benchmarks/profile_gpu.py "${args[@]}" \
    --atoms "$ATOMS" --shapes "${SHAPES:-0}" > "$RES/profile_$name.txt" 2>&1 || stamp "profile $name exit $?"
  cp -f "$RES/profile_$name.txt" "$OUT/"
  head -4 "$RES/profile_$name.txt"
done

#!/usr/bin/env bash
# Two defaults checked on one GPU in one call: batched replicas' cuda_graphs (captured search
# and model, geoff/md/replica_capture.py: "auto", "on" and "off" across replica counts, to
# place the "auto" limit) and edge pairs on CUDA (speed.py --edge-pairs on off: "auto" keeps
# the per-edge path on CUDA except for cuEquivariance), then whether this torch loads an
# AOTInductor package (aoti_check.py; nequip's fastest path needs it).
#
#   OUT=$OUT bash benchmarks/defaults_gpu.sh      # kind nvidia-h200, carry [".whl"]
#
# Knobs: REPLICAS (8 12 16 24 32), MODELS (schnet painn), PAIR_MODELS (schnet painn nequip
# mace), PAIR_SIZES (864 32000), DEADLINE_S (540), DEVICE (cpu: a dry run).
# Results: $OUT/defaults.md (all tables), $OUT/defaults_pytest.log, $OUT/run.log.
cd "$(dirname "$0")/.."
TAG=defaults DEFAULT_DEADLINE_S=540
source benchmarks/gpu_call_common.sh
trap 'pack_joined defaults.md "Defaults ($DEV)" $(cd "$RES" && ls def_*.md 2>/dev/null)' EXIT
install_whl
ROOT=$(pwd)
gpu_tests defaults_pytest.log 150 tests/test_replicas.py tests/test_study_cuda_graphs.py
export PYTHONPATH="$ROOT:$ROOT/benchmarks:$WORK/py"
for graphs in auto on off; do
  [ "$(left)" -gt 60 ] || { stamp "skipped (deadline): replicas $graphs"; continue; }
  stamp "replicas_speed --cuda-graphs $graphs"
  timeout "$(left)" "$V" benchmarks/replicas_speed.py --device "$DEV" --systems cuzr200 \
    --replicas ${REPLICAS:-8 12 16 24 32} --models ${MODELS:-schnet painn} --no-checks \
    --cuda-graphs "$graphs" > "$RES/def_replicas_$graphs.md" 2>&1
  stamp "exit $?"
done
if [ "$(left)" -gt 90 ]; then
  stamp "speed.py --edge-pairs on off"
  timeout "$(( $(left) - 75 ))" "$V" benchmarks/speed.py --device "$DEV" --structures cu \
    --dtypes float32 --models ${PAIR_MODELS:-schnet painn nequip mace} \
    --sizes ${PAIR_SIZES:-864 32000} --edge-pairs on off --model-only \
    --out "$RES/def_edge_pairs.md" > "$RES/edge_pairs.log" 2>&1
  stamp "exit $?"
fi
if [ "$(left)" -gt 20 ]; then
  stamp "aoti_check"
  timeout "$(left)" "$V" benchmarks/aoti_check.py --device "$DEV" > "$RES/def_aoti.md" 2>&1
  stamp "exit $? ($(tail -1 "$RES/def_aoti.md"))"
fi

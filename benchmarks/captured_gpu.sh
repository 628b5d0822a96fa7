#!/usr/bin/env bash
# The captured paths on one GPU in one call: the calculator's default (cuda_graphs="auto":
# search + model in one graph up to 3,000 atoms, SchNet 10,000; the search alone to 50,000)
# against eager, and batched replicas with their search captured (geoff/md/replica_capture.py)
# against the usual batch.
#
#   OUT=$OUT bash benchmarks/captured_gpu.sh      # kind nvidia-h200, carry [".whl"]
#
# Steps: 1. where pytest is installed (or carried in .whl/): the GPU tests of
# tests/test_captured_call.py, test_replicas.py, test_cuda_graphs.py and test_step_graph.py;
# 2. benchmarks/profile_calc.py (new-structure calls and MD steps, 0.5 Å skin) with
# --cuda-graphs auto and off, alternating, ROUNDS times; 3. benchmarks/replicas_speed.py with
# --cuda-graphs on and off. Knobs: MODELS (schnet painn), SIZES (864 2916 4000 8788), ROUNDS
# (2), REPLICAS (1 8 32), DEADLINE_S (540), DEVICE (cpu: a dry run).
# Results: $OUT/captured.md (all tables), $OUT/captured_pytest.log, $OUT/run.log.
cd "$(dirname "$0")/.."
TAG=captured DEFAULT_DEADLINE_S=540
source benchmarks/gpu_call_common.sh
trap 'pack_joined captured.md "Captured paths ($DEV)" $(cd "$RES" && ls cap_*.md 2>/dev/null)' EXIT
install_whl
ROOT=$(pwd)
gpu_tests captured_pytest.log 200 tests/test_captured_call.py tests/test_replicas.py \
  tests/test_cuda_graphs.py tests/test_step_graph.py
export PYTHONPATH="$ROOT:$ROOT/benchmarks:$WORK/py"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for graphs in auto off; do
    [ "$(left)" -gt 40 ] || { stamp "skipped (deadline): calls $graphs r$round"; continue; }
    stamp "profile_calc --cuda-graphs $graphs, round $round"
    timeout "$(left)" "$V" benchmarks/profile_calc.py --device "$DEV" \
      --models ${MODELS:-schnet painn} --sizes ${SIZES:-864 2916 4000 8788} --skins 0.5 \
      --md-steps 10 --top 0 --cuda-graphs "$graphs" | grep "^|" > "$RES/cap_calls_${graphs}_r$round.md"
    stamp "exit ${PIPESTATUS[0]}"
  done
done
for graphs in on off; do
  [ "$(left)" -gt 30 ] || { stamp "skipped (deadline): replicas $graphs"; continue; }
  stamp "replicas_speed --cuda-graphs $graphs"
  timeout "$(left)" "$V" benchmarks/replicas_speed.py --device "$DEV" \
    --replicas ${REPLICAS:-1 8 32} --models ${MODELS:-schnet painn} --no-checks \
    --cuda-graphs "$graphs" > "$RES/cap_replicas_$graphs.md" 2>&1
  stamp "exit $?"
done

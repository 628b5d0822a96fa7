#!/usr/bin/env bash
# Where an MD step's time goes on one GPU, beside the model's own time (issue 12's "ASE call
# within 1.3x of the model"): benchmarks/profile_calc.py with a 0.5 Å skin for each VARIANT,
# the first size's step in parts and profiled (--profile-md).
#
#   OUT=$OUT bash benchmarks/md_step_gpu.sh      # kind nvidia-h200, carry [".whl"]
#
# Knobs: MODELS (schnet painn), SIZES (864 4000), VARIANTS ("eager graphs graphs+compile"; a
# variant naming "keep", e.g. "keep graphs+keep", adds --skin-edges keep),
# TREES ("."; e.g. ". .before": the same runs from another checkout's geoff, for before /
# after in one call; they alternate per variant), ROUNDS (1; e.g. 3: A B A B A B, so that
# a slow spell of the machine does not land on one tree: the same model's time moved 35 %
# between two sequential passes in the tenth session), TASKSET (e.g. "0-3": pin to these
# cores while something else runs), DEADLINE_S (480), DEVICE (cpu: a dry run). First,
# where pytest is installed (or carried in .whl/), tests/test_neighbours.py, test_skin_edges.py,
# test_step_graph.py and test_cuda_graphs.py, whose GPU tests check the Verlet list's, the
# kept Graph's and the captured path's CUDA answers against the CPU's and eager ones.
# Results: $OUT/md_step.md, $OUT/md_pytest.log, $OUT/run.log.
cd "$(dirname "$0")/.."
TAG=md DEFAULT_DEADLINE_S=480
source benchmarks/gpu_call_common.sh
trap 'pack_joined md_step.md "MD step vs model ($DEV)" $(cd "$RES" && ls md_*.md 2>/dev/null)' EXIT
install_whl
ROOT=$(pwd)
# the GPU paths of the Verlet list, the kept Graph and the CUDA-graph buffers, first
gpu_tests md_pytest.log 180 tests/test_neighbours.py tests/test_skin_edges.py \
  tests/test_step_graph.py tests/test_cuda_graphs.py
pin=(); [ -n "${TASKSET:-}" ] && pin=(taskset -c "$TASKSET")
for round in $(seq 1 "${ROUNDS:-1}"); do
  for variant in ${VARIANTS:-eager graphs graphs+compile}; do
    for tree in ${TREES:-.}; do
      flags=(); [[ $variant == *graphs* ]] && flags+=(--cuda-graphs auto)
      [[ $variant == *compile* ]] && flags+=(--compile)
      [[ $variant == *keep* ]] && flags+=(--skin-edges keep)
      [ "$(left)" -gt 30 ] || { stamp "skipped (deadline): $tree $variant"; continue; }
      name="md_$(basename "$(cd "$tree" && pwd)")_${variant//+/_}_r$round.md"
      stamp "$tree $variant -> $name"
      PYTHONPATH="$ROOT/$tree:$ROOT/benchmarks:$WORK/py" timeout "$(left)" \
        "${pin[@]}" "$V" benchmarks/profile_calc.py --device "$DEV" \
        --models ${MODELS:-schnet painn} --sizes ${SIZES:-864 4000} --skins 0.5 --profile-md \
        --top 25 --threads 2 "${flags[@]}" > "$RES/$name" 2>&1
      stamp "exit $?"
    done
  done
done

#!/usr/bin/env bash
# edge_chunk="auto" against chunk 0 (plain) and 2^17 (the old default) on one GPU, in ONE call
# that stops itself by a deadline (issue 12: a memory-aware default edge chunk,
# geoff/potentials/autochunk.py):
#   0. installs the carried wheels (.whl/: ase, matscipy), checks the imports, nvidia-smi;
#   1. benchmarks/autochunk_speed.py (one process): SchNet, PaiNN, MACE- and NequIP-style
#      (e3nn, speed.py's hyper-parameters), float32 FCC Cu at 32,000 and 131,072 atoms, each at
#      chunk 0 / 131072 / auto: model ms, atoms/s, memory per atom, the chunk auto chose and
#      its calibration fit, auto's speed against 2^17; then 1,000,000 atoms with auto for PaiNN
#      and MACE-style (one timed call each);
#   2. if time is left and pytest is there: tests/test_autochunk.py -k gpu (the real
#      calibration and auto = plain on the GPU).
# Run from the repository root, kind nvidia-h200, carrying .whl:
#   OUT=$OUT bash benchmarks/autochunk_gpu.sh
# Knobs: DEADLINE_S (300: seconds from the start; no new case after it), DEVICE (cpu: a dry
# run without a GPU at tiny sizes), MODELS, SIZES, CHUNKS, BIG, BIG_MODELS, REPEATS, BUDGET.
# Results: $OUT/autochunk.md (the table), $OUT/run.log, $OUT/results.tar.gz (table, JSON rows,
# logs), packed on exit even when stopped early.
cd "$(dirname "$0")/.."
TAG=autochunk DEFAULT_DEADLINE_S=300
source benchmarks/gpu_call_common.sh
trap 'pack_tables autochunk.md' EXIT

install_whl
export PYTHONPATH="$(pwd):$(pwd)/benchmarks:$WORK/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$V" -c "import ase, e3nn, torch; print('ase', ase.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || { stamp "FAILED: imports"; exit 1; }
[ "$DEV" = cuda ] && nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader

if [ "$DEV" = cuda ]; then
  MODELS=${MODELS:-schnet painn mace nequip}; SIZES=${SIZES:-32000 131072}
  CHUNKS=${CHUNKS:-0 131072 auto}; BIG=${BIG:-1000000}; BIG_MODELS=${BIG_MODELS:-painn mace}
  REPEATS=${REPEATS:-3}; BUDGET=${BUDGET:-4}
else
  MODELS=${MODELS:-schnet painn}; SIZES=${SIZES:-32}; CHUNKS=${CHUNKS:-0 64 auto}
  BIG=${BIG:-108}; BIG_MODELS=${BIG_MODELS:-painn}; REPEATS=${REPEATS:-1}; BUDGET=${BUDGET:-1}
fi

budget=$(( $(left) - 10 ))
stamp "1. autochunk_speed.py (deadline in $budget s): $MODELS at $SIZES, chunks $CHUNKS; $BIG atoms: $BIG_MODELS"
timeout $(( budget > 20 ? budget : 20 )) "$V" benchmarks/autochunk_speed.py --device "$DEV" \
  --models $MODELS --sizes $SIZES --chunks $CHUNKS --big "$BIG" --big-models $BIG_MODELS \
  --repeats "$REPEATS" --budget "$BUDGET" --deadline "$(( budget - 5 ))" \
  --out "$RES/autochunk.md" > "$RES/autochunk.log" 2>&1
stamp "autochunk_speed.py exit $? (124: stopped at the deadline; the table has what finished)"
grep -E "^\[" "$RES/autochunk.log" | cut -c1-300
grep -E "Error|Warning" "$RES/autochunk.log" | sort | uniq -c | tail -5
[ -f "$RES/autochunk.md" ] && cat "$RES/autochunk.md"

if [ "$DEV" = cuda ] && (( $(left) > 40 )) && "$V" -c "import pytest" 2>/dev/null; then
  stamp "2. pytest tests/test_autochunk.py -k gpu"
  timeout $(( $(left) - 5 )) "$V" -m pytest -q -p no:cacheprovider tests/test_autochunk.py -k gpu \
    > "$RES/pytest.log" 2>&1
  stamp "pytest exit $? ($(tail -1 "$RES/pytest.log"))"
else
  stamp "2. the GPU test not run (no GPU, no pytest or no time left)"
fi
stamp "done"

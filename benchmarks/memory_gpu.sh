#!/usr/bin/env bash
# GPU memory per atom and the largest size that runs, chunked against plain (issue 12's
# memory lever, geoff/potentials/chunking.py), via benchmarks/speed.py --edge-chunks.
#
#   OUT=$OUT bash benchmarks/memory_gpu.sh
#
# Environment: MODELS (default "mace painn schnet"), CHUNKS (edges per chunk, 0 = plain;
# default "0 131072"), SIZES (first sizes, then doubled up to MAX_ATOMS, default 32000 and
# 1100000: FCC Cu 32,000 ... 1,000,188 atoms), DEADLINE_S (default 520: no size starts after
# it, a running one is stopped; what finished is written). Every size runs in a fresh process;
# memory is torch.cuda.max_memory_allocated over one energy+forces call minus what was
# allocated before it (model and graph), over N. Timing: model alone (--model-only), float32.
# Needs ase (and matscipy) from .whl/ (carry it): installed under $WORK/py, no index.
# Results: $OUT/memory_gpu_<model>.md and memory_gpu.log. DEVICE=cpu (with tiny SIZES and
# MAX_ATOMS) checks the script on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
V=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d /tmp/geoff-mem.XXXXXX)}
WORK=${WORK:-$(mktemp -d /tmp/geoff-mem-work.XXXXXX)}
T_END=$(( $(date +%s) + ${DEADLINE_S:-520} ))
mkdir -p "$OUT" "$WORK/py"
if ! "$V" -c "import ase" 2>/dev/null; then
  "$V" -m pip install -q --no-deps --no-index --target "$WORK/py" .whl/*.whl
fi
export PYTHONPATH="$(pwd):$WORK/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT/memory_gpu.log"
for model in ${MODELS:-mace painn schnet}; do
  left=$(( T_END - $(date +%s) ))
  if (( left < 20 )); then echo "deadline: $model not run" | tee -a "$OUT/memory_gpu.log"; continue; fi
  "$V" benchmarks/speed.py --device "${DEVICE:-cuda}" --models "$model" --structures cu --dtypes float32 \
    --edge-chunks ${CHUNKS:-0 131072} --sizes ${SIZES:-32000} --grow \
    --max-atoms "${MAX_ATOMS:-1100000}" --model-only --repeats 2 --budget 10 \
    --deadline "$left" --out "$OUT/memory_gpu_$model.md" 2>>"$OUT/memory_gpu.log" \
    || echo "FAILED: $model" | tee -a "$OUT/memory_gpu.log"
done
cat "$OUT"/memory_gpu_*.md 2>/dev/null

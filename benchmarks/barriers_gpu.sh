#!/usr/bin/env bash
# The barrier benchmark (benchmarks/barriers.py) on the GPU machine (2 H200, 32 cores): every
# model row at once (the eight zoo models and symgnn-paper: 9 processes, spread over the GPUs,
# under CUDA MPS when present), then the explanations of the best exactly-masked model
# (benchmarks/barriers_explain.py) if time is left. Stops itself before DEADLINE_S.
#
#   OUT=$OUT DATA=examples/barriers/cuzr_barriers.extxyz bash benchmarks/barriers_gpu.sh
#
# Environment: DATA (the labelled glasses), OUT (results), MINUTES (training budget per model,
# default 5), MODELS ("all gemnet": the eight, symgnn-paper and GemNet), DEVICES (cuda:0,cuda:1), JOBS (10), DEADLINE_S (520: seconds from the start after
# which nothing new starts), EXPLAIN_ATOMS (60), EXPLAIN_DEVICE (cuda:0), PYTHON (python3). Needs the ase wheel in .whl/
# (scipy, matplotlib, torch from the machine). Writes $OUT/barriers{.json,_table.md,_hist.png,
# _predictions.csv}, $OUT/models/<row>/best.ckpt, $OUT/barriers_explain*, $OUT/*.log.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
V=${PYTHON:-python3}
OUT=${OUT:?set OUT}
DATA=${DATA:-examples/barriers/cuzr_barriers.extxyz}
MINUTES=${MINUTES:-5}; JOBS=${JOBS:-10}; MODELS=${MODELS:-all gemnet}; DEADLINE_S=${DEADLINE_S:-520}
DEVICES=${DEVICES:-cuda:0,cuda:1}; EXPLAIN_ATOMS=${EXPLAIN_ATOMS:-60}
WORK=${WORK:-$(mktemp -d /tmp/geoff-barriers.XXXXXX)}
mkdir -p "$OUT" "$WORK/py"
if ! "$V" -c "import ase, matscipy" 2>/dev/null; then
  "$V" -m pip install --quiet --no-deps --no-index --target "$WORK/py" .whl/*.whl  # ase, matscipy
fi
export PYTHONPATH="$(pwd):$WORK/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
"$V" -c "import ase, matscipy, scipy, matplotlib, torch; print('torch', torch.__version__, 'gpus', torch.cuda.device_count())" \
  2>&1 | tee "$OUT/env.log" || { echo "missing a package (see env.log)"; exit 1; }
[ -f "$DATA" ] || { echo "no data at $DATA" | tee -a "$OUT/env.log"; exit 1; }
if command -v nvidia-cuda-mps-control >/dev/null; then
  # MPS: the kernels of the nine small processes share each GPU instead of time-slicing it
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p /tmp/mps-pipe /tmp/mps-log
  nvidia-cuda-mps-control -d && echo "MPS on" >> "$OUT/env.log"
fi

left=$(( DEADLINE_S - ($(date +%s) - T0) ))
"$V" benchmarks/barriers.py --data "$DATA" --device "$DEVICES" --jobs "$JOBS" --models $MODELS \
  --minutes "$MINUTES" --deadline-s "$(( left - 20 ))" --out "$OUT/barriers" \
  --keep "$OUT/models" > "$WORK/barriers.log" 2>&1
echo "barriers.py: exit $?, $(( $(date +%s) - T0 )) s" | tee -a "$OUT/env.log"
grep -v "^epoch" "$WORK/barriers.log" | tail -c 200000 > "$OUT/barriers.log"
rm -f "$OUT"/models/*/last.ckpt  # keep best.ckpt, metrics and logs: small

# The explanations: the best row by MAE among the models whose edge mask is exact.
best=$("$V" - "$OUT/barriers.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["models"]
exact = ("schnet", "painn", "egnn", "nequip", "mace", "symgnn", "symgnn-paper")
ok = [(r["mae"], k) for k, r in rows.items() if k in exact and "mae" in r]
print(min(ok)[1] if ok else "")
PY
)
left=$(( DEADLINE_S - ($(date +%s) - T0) ))
if [ -n "$best" ] && [ "$left" -gt 90 ]; then
  OMP_NUM_THREADS=16 timeout "$left" "$V" benchmarks/barriers_explain.py "$OUT/models/$best/best.ckpt" "$DATA" \
    --frames -1 --atoms "$EXPLAIN_ATOMS" --device "${EXPLAIN_DEVICE:-cuda:0}" --out "$OUT/barriers_explain" \
    > "$OUT/explain.log" 2>&1
  echo "barriers_explain.py ($best): exit $?, $(( $(date +%s) - T0 )) s" | tee -a "$OUT/env.log"
else
  echo "explanations skipped (best row '$best', $left s left)" | tee -a "$OUT/env.log"
fi
cat "$OUT/barriers_table.md" 2>/dev/null
# The device returns few files per call: everything in one archive beside the table.
tar -czf "$WORK/results.tar.gz" -C "$OUT" . && mv "$WORK/results.tar.gz" "$OUT/" && echo "packed $(du -h "$OUT/results.tar.gz" | cut -f1)"

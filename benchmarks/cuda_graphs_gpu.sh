#!/usr/bin/env bash
# CUDA graphs (geoff/cuda_graphs.py) on one GPU, in ONE call that stops itself by a deadline:
#   0. installs the carried wheels (.whl/: ase, matscipy) and checks the imports;
#   1. if pytest is there: tests/test_cuda_graphs.py -k gpu (captured == eager, float64);
#   2. benchmarks/cuda_graphs_speed.py: the float64 agreement check of every captured model;
#      schnet, painn, nequip, mace (speed.py's hyper-parameters) at 864 atoms, then the ethanol
#      replica MD (R = 8, 32, 128), then 32, 256, 2048, 8000 atoms: eager vs captured model,
#      calculator with and without a skin, max |captured - eager|.
# Run from the repository root (carry .whl):
#   OUT=$OUT bash benchmarks/cuda_graphs_gpu.sh
# Knobs: DEADLINE_S (500: seconds from the start; no new row after it), SIZES, MODELS, REPLICAS,
# DEVICE (cpu: a dry run of the script without a GPU, tiny sizes).
# Results: $OUT/cuda_graphs.md (the tables), $OUT/run.log, $OUT/results.tar.gz (rows.json, the
# logs), packed on exit even when stopped early.
cd "$(dirname "$0")/.."
TAG=cg DEFAULT_DEADLINE_S=500
source benchmarks/gpu_call_common.sh
pack() {
  cp -f "$OUT/run.log" "$RES/" 2>/dev/null
  [ -f "$RES/cuda_graphs.md" ] && cp -f "$RES/cuda_graphs.md" "$OUT/"
  tar -czf "$OUT/results.tar.gz" -C "$WORK" results && stamp "packed $OUT/results.tar.gz"
}
trap pack EXIT

install_whl
export PYTHONPATH="$(pwd):$WORK/py${PYTHONPATH:+:$PYTHONPATH}"
"$V" -c "import ase, matscipy, e3nn, torch, geoff.cuda_graphs; print('ase', ase.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || { stamp "FAILED: imports"; exit 1; }
[ "$DEV" = cuda ] && nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader

if "$V" -c "import pytest" 2>/dev/null; then
  stamp "pytest tests/test_cuda_graphs.py"
  timeout 150 "$V" -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py -k gpu > "$RES/pytest.log" 2>&1
  stamp "pytest exit $? ($(tail -1 "$RES/pytest.log"))"
else
  stamp "no pytest here: the agreement check is the benchmark's check section"
fi

if [ "$DEV" = cuda ]; then
  SIZES=${SIZES:-864 32 256 2048 8000}; REPLICAS=${REPLICAS:-8 32 128}
else
  SIZES=${SIZES:-32}; REPLICAS=${REPLICAS:-2}
fi
stamp "cuda_graphs_speed.py (deadline in $((END - 30 - $(date +%s))) s)"
"$V" benchmarks/cuda_graphs_speed.py --device "$DEV" --out "$RES" --deadline $((END - 30)) \
  --sizes $SIZES --replicas $REPLICAS ${MODELS:+--models $MODELS} > "$RES/speed.log" 2>&1
stamp "cuda_graphs_speed.py exit $?"
grep -E "FAILED|deadline|Error" "$RES/speed.log" | head -20
[ -f "$RES/cuda_graphs.md" ] && cat "$RES/cuda_graphs.md"
stamp "done"

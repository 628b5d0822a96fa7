#!/usr/bin/env bash
# cuEquivariance kernels (geoff/potentials/cueq.py) on one GPU, in ONE call that stops itself
# by a deadline (issue 12, lever "cuEquivariance"):
#   0. installs the carried wheels: .whl/*.whl (ase, matscipy) and .peers/cueq/ (*.whl:
#      cuequivariance, cuequivariance-torch, ...; *.tar.xz: the ops wheels unpacked, extracted
#      into the same folder), and logs which cuEq pieces import;
#   1. the agreement check: benchmarks/cueq_check.py (MACE-style and NequIP-style at speed.py's
#      hyper-parameters, 864 atoms, float64 to 1e-10 and float32 to round-off), then, if pytest
#      is there, tests/test_cueq.py -k gpu;
#   2. speed and memory, speed.py --kernels e3nn cueq (float32, FCC Cu, model on a prepared
#      graph + the calculator call): MACE-style at 864 / 32,000 / 131,072 atoms with the
#      default edge chunking; MACE-style + cuEq unchunked from 32,000 atoms doubled until out
#      of memory; MACE-style + cuEq in chunks of 2^20 edges doubled from 262,144 to 1.1M
#      atoms (model only); NequIP-style e3nn vs cuEq at 864 / 32,000;
#   3. (after the first MACE series) eager vs CUDA graphs, e3nn vs cuEq, at 864 atoms.
# Run from the repository root, kind nvidia-h200, carrying .whl and .peers:
#   OUT=$OUT bash benchmarks/cueq_gpu.sh
# Knobs: DEADLINE_S (480: seconds from the start; no new size after it), DEVICE (cpu: a dry
# run without a GPU; tiny sizes, cuEq's naive method), CHECK_ATOMS, MACE_SIZES, PLAIN_SIZES,
# GROW_FROM, MAX_ATOMS, NEQUIP_SIZES, REPEATS, BUDGET.
# Results: $OUT/cueq.md (the tables), $OUT/run.log, $OUT/results.tar.gz (everything: check
# JSON, logs, tables), packed on exit even when stopped early.
cd "$(dirname "$0")/.."
TAG=cueq DEFAULT_DEADLINE_S=480
source benchmarks/gpu_call_common.sh
trap 'pack_joined cueq.md "cuEquivariance vs e3nn kernels (benchmarks/cueq_gpu.sh)" check.log mace.md graphs.log mace_cueq_plain.md mace_grow.md nequip.md' EXIT

install_whl
install_cueq
export PYTHONPATH="$(pwd):$(pwd)/benchmarks:$WORK/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$V" -c "import ase, matscipy, e3nn, torch; print('ase', ase.__version__, 'e3nn', e3nn.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || { stamp "FAILED: imports"; exit 1; }
"$V" - <<'EOF'
import importlib
for name in ("cuequivariance", "cuequivariance_torch", "cuequivariance_ops_torch"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"), "imports")
    except Exception as exc:  # noqa: BLE001
        print(name, "DOES NOT IMPORT:", type(exc).__name__, exc)
from geoff.potentials.cueq import available, installed
print("cueq installed:", installed(), "GPU kernels:", available("cuda"))
EOF
[ "$DEV" = cuda ] && nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader

if [ "$DEV" = cuda ]; then
  CHECK_ATOMS=${CHECK_ATOMS:-864}; MACE_SIZES=${MACE_SIZES:-864 32000 131072}
  PLAIN_SIZES=${PLAIN_SIZES:-32000 131072}; GROW_FROM=${GROW_FROM:-262144}
  MAX_ATOMS=${MAX_ATOMS:-1100000}
  NEQUIP_SIZES=${NEQUIP_SIZES:-864 32000}; REPEATS=${REPEATS:-5}; BUDGET=${BUDGET:-8}
else
  CHECK_ATOMS=${CHECK_ATOMS:-32}; MACE_SIZES=${MACE_SIZES:-32}; GROW_FROM=${GROW_FROM:-32}
  PLAIN_SIZES=${PLAIN_SIZES:-32}
  MAX_ATOMS=${MAX_ATOMS:-64}; NEQUIP_SIZES=${NEQUIP_SIZES:-32}; REPEATS=${REPEATS:-1}
  BUDGET=${BUDGET:-1}
fi

stamp "1. agreement: cueq_check.py at $CHECK_ATOMS atoms"
timeout $(( $(left) > 120 ? 120 : $(left) )) "$V" benchmarks/cueq_check.py --device "$DEV" \
  --atoms "$CHECK_ATOMS" --out "$RES/check.json" 2>"$RES/check.err" | tee "$RES/check.log"
stamp "cueq_check.py exit ${PIPESTATUS[0]} (0: every case PASS)"
tail -3 "$RES/check.err"
if [ "$DEV" = cuda ] && "$V" -c "import pytest" 2>/dev/null; then
  stamp "pytest tests/test_cueq.py -k gpu"
  timeout 90 "$V" -m pytest -q -p no:cacheprovider tests/test_cueq.py -k gpu > "$RES/pytest.log" 2>&1
  stamp "pytest exit $? ($(tail -1 "$RES/pytest.log"))"
else
  stamp "no pytest here (or no GPU): the agreement check above is the check"
fi

speed() {  # speed.py with a deadline a little before ours; $1 = table name, rest = arguments
  local name=$1; shift
  local budget=$(( $(left) - 15 ))
  if (( budget < 20 )); then stamp "deadline: $name not run"; return; fi
  stamp "2. speed.py $name (deadline in $budget s): $*"
  "$V" benchmarks/speed.py --device "$DEV" --structures cu --dtypes float32 --threads 8 \
    --repeats "$REPEATS" --budget "$BUDGET" --deadline "$budget" --out "$RES/$name.md" "$@" \
    2>"$RES/$name.log"
  stamp "speed.py $name exit $?"
  grep -E "Error|error|FAILED" "$RES/$name.log" | grep -v Warning | tail -5
}
# a. what a user gets: the default edge chunking (131,072 edges) for both kernels
speed mace --models mace --kernels e3nn cueq --sizes $MACE_SIZES
# CUDA graphs at the smallest size (issue 12's <= 5 ms at 864 atoms): eager vs captured
if (( $(left) > 60 )); then
  stamp "3. cueq_check.py --graphs at $CHECK_ATOMS atoms"
  timeout $(( $(left) > 100 ? 80 : $(left) - 20 )) "$V" benchmarks/cueq_check.py --device "$DEV" \
    --graphs --atoms "$CHECK_ATOMS" --out "$RES/graphs.json" 2>"$RES/graphs.err" \
    | tee "$RES/graphs.log"
  stamp "cueq_check.py --graphs exit ${PIPESTATUS[0]}"
fi
# b. cuEq keeps ~15x less per edge than e3nn: its top speed unchunked, doubled to out of memory
speed mace_cueq_plain --models mace --kernels cueq --edge-chunks 0 --sizes $PLAIN_SIZES --grow \
  --max-atoms "$MAX_ATOMS" --model-only
# c. the largest system: chunks of 2^20 edges (~25k atoms), doubled to 1.1M atoms
speed mace_grow --models mace --kernels cueq --edge-chunks 1048576 --sizes $GROW_FROM --grow \
  --max-atoms "$MAX_ATOMS" --model-only
speed nequip --models nequip --kernels e3nn cueq --sizes $NEQUIP_SIZES
stamp "done"

#!/usr/bin/env bash
# torch.compile (geoff/compiled.py) on the GPU, in ONE call that stops itself by a deadline
# (issue 12, lever "torch.compile"):
#   0. installs the carried wheels (.whl/: ase, matscipy; .peers/cueq/ when carried: the
#      cuEquivariance wheels and unpacked ops wheels), logs what imports;
#   1. benchmarks/compile_speed.py: speed.py's models and hyper-parameters, FCC Cu, float32,
#      energy + forces on a prepared graph, plain path (edge_chunk 0), at 864 / 32,000 /
#      131,072 atoms: eager vs compiled (compile time and max |dF| reported), and below
#      GRAPHS_MAX atoms eager vs compiled both captured in CUDA graphs (GraphedModel). An out
#      of memory ends that model's series (unchunked PaiNN and MACE-style do not fit 131k).
#      Two lanes when two GPUs are visible (lane 0: schnet, painn, nequip; lane 1: mace with
#      e3nn then cuEq kernels), else one after the other in that order of priority.
# Run from the repository root, kind nvidia-h200-x2 (two lanes; one GPU runs them in turn),
# carrying .whl, and .peers for the cuEq rows (about 6 min with the default deadline):
#   OUT=$OUT bash benchmarks/compile_gpu.sh
# Dry run here (tiny models, ~6 min on 2 loaded cores): DEVICE=cpu OUT=/tmp/x bash benchmarks/compile_gpu.sh
# Knobs: DEADLINE_S (360: seconds from the start; no new size after it), SIZES, CALLS,
# GRAPHS_MAX, LANE0, LANE1 (the models of each lane), DEVICE (cpu: a dry run without a GPU,
# 8-feature models at 32 and 108 atoms).
# Results: $OUT/compile.md (the tables), $OUT/run.log, $OUT/results.tar.gz (rows.jsonl and the
# logs of each lane), packed on exit even when stopped early.
cd "$(dirname "$0")/.."
TAG=compile DEFAULT_DEADLINE_S=360
source benchmarks/gpu_call_common.sh
trap 'pack_joined compile.md "torch.compile vs eager (benchmarks/compile_gpu.sh)" lane0/compile.md lane1/compile.md' EXIT

install_whl
install_cueq
export PYTHONPATH="$(pwd):$WORK/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$V" -c "import ase, matscipy, e3nn, torch, geoff.compiled; print('ase', ase.__version__, 'e3nn', e3nn.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || { stamp "FAILED: imports"; exit 1; }
"$V" -c "from geoff.potentials.cueq import available, installed; print('cueq installed:', installed(), 'GPU kernels:', available('cuda'))" \
  || stamp "WARNING: geoff.potentials.cueq does not import (the cueq rows will say why)"

if [ "$DEV" = cuda ]; then
  nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader
  N_GPUS=$(nvidia-smi -L | wc -l)
  SIZES=${SIZES:-864 32000 131072}; CALLS=${CALLS:-20}; GRAPHS_MAX=${GRAPHS_MAX:-2000}
  EXTRA="--threads 8"
else
  N_GPUS=1; SIZES=${SIZES:-32 108}; CALLS=${CALLS:-2}; GRAPHS_MAX=${GRAPHS_MAX:-2000}
  EXTRA="--threads 2 --tiny"
fi
LANE0=${LANE0:-schnet painn nequip}; LANE1=${LANE1:-mace}

lane() {  # $1 = lane (GPU index), $2 = its models; one compile_speed.py run
  local budget=$(( $(left) - 20 ))
  if (( budget < 30 )); then stamp "deadline: lane $1 ($2) not run"; return; fi
  stamp "1. lane $1: compile_speed.py --models $2 (deadline in $budget s)"
  mkdir -p "$RES/lane$1"
  CUDA_VISIBLE_DEVICES=$1 "$V" benchmarks/compile_speed.py --device "$DEV" --models $2 \
    --kernels e3nn cueq --sizes $SIZES --calls "$CALLS" --graphs "$GRAPHS_MAX" $EXTRA \
    --deadline "$budget" --out "$RES/lane$1" > "$RES/lane$1/table.log" 2> "$RES/lane$1/rows.log"
  stamp "lane $1 exit $?"
  grep -E "failed" "$RES/lane$1/rows.log" | cut -c1-300 | tail -5
}
if (( N_GPUS >= 2 )); then
  lane 0 "$LANE0" & lane 1 "$LANE1" & wait
else
  lane 0 "$LANE0 $LANE1"
fi
for f in "$RES"/lane*/compile.md; do [ -f "$f" ] && cat "$f"; done
stamp "done"

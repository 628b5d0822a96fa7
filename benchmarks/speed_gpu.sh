#!/usr/bin/env bash
# GPU run of issue 12's peer comparison: geoff and every peer in ONE `speed.py --peers` call.
#
#   OUT=$OUT bash benchmarks/speed_gpu.sh        # kind nvidia-h200, carry [".whl", ".peers"]
#
# Installs .whl (ase, matscipy) and each peer from .peers/ (benchmarks/peers_wheels.sh) into
# its own --target folder, offline; checks each peer imports; then times Cu and Cu64Zr36,
# float32 at SIZES (geoff and the peers grow by doubling to MAX_ATOMS / their out of memory)
# and float64 at the two smallest sizes. Order: MACE (geoff, mace-torch, + cuEq) first, then
# NequIP, schnetpack's PaiNN and SchNet. The table is rewritten after every series
# ($OUT/speed.md, partial until the end); logs and the rest go into $OUT/results.tar.gz
# (packed on exit, the deadline included). DEVICE=cpu runs the same on the CPU (tests).
# Knobs: SIZES, MODELS, STRUCTURES, DTYPES, KERNELS, GROW (1), PASS2_MODELS, PASS2_SIZES,
# DEADLINE_S, MAX_ATOMS, REPEATS, BUDGET, THREADS, PEERS (names for --peers; all when empty,
# e.g. "nequip_eager nequip_aot nequip_aot_cueq"). nequip's AOTInductor rows: its package is
# trained and packed here (benchmarks/peers/nequip_package.py, offline) and nequip-compiled
# for each dtype and kernel choice, in parallel, before speed.py (compile seconds in run.log);
# e.g. nequip alone at its fastest beside geoff's NequIP-style:
#   OUT=$OUT MODELS=nequip STRUCTURES=cu DTYPES=float32 GROW=0 \
#     PEERS="nequip_eager nequip_aot nequip_aot_cueq" bash benchmarks/speed_gpu.sh
# COMPILE=1: each geoff series also through torch.compile (speed.py --compile); COMPILE=only:
# the compiled series alone (--compile-only).
# EDGE_PAIRS: e.g. "on off": each geoff series with and without edge pairs (speed.py
# --edge-pairs; the calculator's default "auto" turns them on on CUDA for the cuEq kernels).
# RADIAL_TABLE: e.g. "on off": each geoff series with and without radial tables (speed.py
# --radial-table).
# EDGE_CHUNKS: geoff's series (speed.py --edge-chunks, e.g. "0 auto"; default auto).
# PREPARE_ONLY=1: install and build nequip's AOTInductor models, then stop (with a fixed WORK, a
# second run reuses them: the compile, CPU-bound, can overlap other GPU timing in one call).
# NEQUIP_SKIP_AOTI_MODEL_CHECK=1 (nequip's own switch): nequip-compile skips loading the model
# back (that load segfaults on a torch 2.11 image); the row then checks it against eager.
# MODEL_ONLY=1: the model column alone (speed.py --model-only; a peer's ASE call at 131k
# takes seconds per repeat, which a short deadline cannot spare).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
DEADLINE_S=${DEADLINE_S:-500}
SIZES=${SIZES:-864 32000 131072}
MAX_ATOMS=${MAX_ATOMS:-1100000}
REPEATS=${REPEATS:-3}
BUDGET=${BUDGET:-10}
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
START=$(date +%s)
RES="$WORK/results"; mkdir -p "$RES"  # not under $OUT: the device returns 8 files at most
LOG="$RES/run.log"

log() { echo "[$(( $(date +%s) - START )) s] $*" | tee -a "$LOG"; }
pack() {
  cp -f "$OUT"/speed*.md "$RES/" 2>/dev/null
  tar -czf "$OUT/results.tar.gz" -C "$WORK" results && log "packed $OUT/results.tar.gz"
}
trap pack EXIT

log "device $DEVICE, sizes $SIZES, deadline ${DEADLINE_S} s, work $WORK"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$LOG"

# geoff's own environment: .whl (ase, matscipy) on PYTHONPATH, never a peer's package
mkdir -p "$WORK/py"
"$PY" -m pip install -q --no-deps --no-index --target "$WORK/py" .whl/*.whl >>"$LOG" 2>&1 \
  && log "installed .whl" || log "FAILED: installing .whl"
export PYTHONPATH="$PWD:$WORK/py${PYTHONPATH:+:$PYTHONPATH}"

# each peer in its own folder: $GEOFF_PEERS/<folder>, marked .installed for speed.py
export GEOFF_PEERS="$WORK/peers"
wanted() {  # wanted <folder>: a peer folder PEERS asks for (every folder when PEERS is empty)
  [ -z "${PEERS:-}" ] || [[ " $PEERS " == *"$1"* ]]
}
install_peer() {  # install_peer <folder> <wheel dir>...
  local folder=$1; shift
  wanted "$folder" || { log "peer $folder not asked for (PEERS)"; return 0; }
  local target="$GEOFF_PEERS/$folder" wheels=()
  for d in "$@"; do wheels+=(".peers/$d"/*.whl); done
  if "$PY" -m pip install -q --no-deps --no-index --ignore-requires-python \
       --target "$target" "${wheels[@]}" >>"$LOG" 2>&1; then
    touch "$target/.installed"; log "installed peer $folder"
  else
    log "FAILED: installing peer $folder (its rows will say why)"
  fi
}
install_peer mace mace common
install_peer nequip nequip common
install_peer schnetpack schnetpack common
if [ "$DEVICE" = cuda ] && wanted mace_cueq; then
  install_peer mace_cueq mace cueq common
  tar -xJf .peers/cueq/cueq-ops.tar.xz -C "$GEOFF_PEERS/mace_cueq" >>"$LOG" 2>&1 \
    && log "unpacked cuEq ops" || log "FAILED: unpacking cuEq ops"
fi

check() {  # check <folder> <python statement>: the peer imports in its own folder
  wanted "$1" || return 0
  if PYTHONPATH="$GEOFF_PEERS/$1:$PWD/benchmarks/peers:$PWD/benchmarks:$PYTHONPATH" "$PY" -c "$2" >>"$LOG" 2>&1; then
    log "imports ok: $1"
  else
    log "FAILED: imports of $1 (see run.log)"
  fi
}
check mace "from runner import stub_missing; stub_missing(); import mace.calculators, e3nn; print('e3nn', e3nn.__version__)"
check nequip "import nequip.model, nequip.integrations.ase, pytorch_lightning, lmdb, e3nn; print('e3nn', e3nn.__version__)"
check schnetpack "import schnetpack.interfaces, schnetpack.transform"
[ "$DEVICE" = cuda ] && check mace_cueq "from runner import stub_missing; stub_missing(); import cuequivariance_torch, cuequivariance_ops_torch, mace.calculators"

# geoff's own cuEquivariance kernels (geoff[cuda]) for --kernels cueq: the same wheels, into
# geoff's folder (cuEq does not use e3nn, so it cannot clash with geoff's e3nn); nequip's
# enable_CuEquivariance finds them there too (its runner has geoff's PYTHONPATH after its own)
if [ "$DEVICE" = cuda ] && [[ "${KERNELS:-e3nn cueq}" == *cueq* || "${PEERS:-cueq}" == *cueq* ]]; then
  "$PY" -m pip install -q --no-deps --no-index --target "$WORK/py" .peers/cueq/*.whl >>"$LOG" 2>&1 \
    && tar -xJf .peers/cueq/cueq-ops.tar.xz -C "$WORK/py" >>"$LOG" 2>&1 \
    && log "geoff[cuda]: cuEquivariance installed for geoff" || log "FAILED: cuEq for geoff"
fi

# nequip's AOTInductor models, before speed.py (each compile is minutes): per dtype, the
# package (one-epoch nequip-train + nequip-package, CPU), then nequip-compile for each kernel
# choice in parallel (prepare_nequip_aot <modifiers>...: "" for e3nn, enable_CuEquivariance);
# the runner finds them in $GEOFF_PEERS/nequip_models.
prepare_nequip_aot() {
  local env="$GEOFF_PEERS/nequip:$PWD/benchmarks/peers:$PWD/benchmarks:$PYTHONPATH"
  local left=$(( DEADLINE_S - ($(date +%s) - START) - 60 )) dtype
  [ "$left" -gt 60 ] || { log "skipped (deadline): nequip AOTInductor"; return; }
  log "nequip AOTInductor: package + compile (${left} s at most)"
  for dtype in ${DTYPES:-float32 float64}; do
    (
      timeout "$left" env PYTHONPATH="$env" "$PY" benchmarks/peers/nequip_package.py \
        --dtype "$dtype" >>"$RES/nequip_aot.log" 2>&1 || { log "FAILED: nequip package $dtype"; exit; }
      log "nequip package $dtype built"
      for mods in "$@"; do
        timeout "$left" env PYTHONPATH="$env" "$PY" benchmarks/peers/nequip_package.py \
          --dtype "$dtype" --compile "$DEVICE" --modifiers $mods >>"$RES/nequip_aot.log" 2>&1 \
          && log "nequip compiled: $(cat "$GEOFF_PEERS/nequip_models/nequip-cuzr-$dtype-$DEVICE-${mods:-e3nn}-ase-forces.nequip.json")" \
          || log "FAILED: nequip-compile $dtype ${mods:-e3nn} (see nequip_aot.log)" &
      done
      wait
    ) &
  done
  wait
  cp -f "$GEOFF_PEERS"/nequip_models/*.json "$GEOFF_PEERS"/nequip_models/*.log "$RES/" 2>/dev/null
}
aot_variants=()  # the AOT peers that PEERS selects (speed.py's names; all when empty)
wants() { local w; for w in "$@"; do [[ " ${PEERS:-nequip} " == *" $w "* ]] && return 0; done; return 1; }
wants nequip aotinductor nequip_aot && aot_variants+=("")
[ "$DEVICE" = cuda ] && wants nequip aotinductor nequip_aot_cueq cueq \
  && aot_variants+=(enable_CuEquivariance)
if [[ " ${MODELS:-nequip} ${PASS2_MODELS:-} " == *" nequip "* ]] && [ ${#aot_variants[@]} -gt 0 ]; then
  prepare_nequip_aot "${aot_variants[@]}"
fi
[ "${PREPARE_ONLY:-0}" = 1 ] && { log "PREPARE_ONLY: stop before timing"; exit 0; }

# One speed.py --peers pass: pass <name> <models> <sizes> [grow]; knobs STRUCTURES (cu cuzr),
# DTYPES (float32 float64), KERNELS (e3nn cueq). PASS2_MODELS/PASS2_SIZES: a second pass
# (e.g. the MACE family at large sizes first, the others at small sizes after).
run_pass() {
  local name=$1 models=$2 sz=$3 grow=${4:-}
  local left=$(( DEADLINE_S - ($(date +%s) - START) ))
  [ "$left" -gt 20 ] || { log "skipped (deadline): pass $name"; return; }
  log "speed.py --peers pass $name: $models at $sz, $left s left"
  read -r -a sizes <<< "$sz"
  read -r -a fam <<< "$models"
  local peers=() chunks=()
  [ -n "${PEERS:-}" ] && read -r -a peers <<< "$PEERS"
  [ -n "${EDGE_CHUNKS:-}" ] && chunks=(--edge-chunks $EDGE_CHUNKS)
  [ "${COMPILE:-0}" = 1 ] && chunks+=(--compile)
  [ "${COMPILE:-0}" = only ] && chunks+=(--compile-only)
  [ -n "${EDGE_PAIRS:-}" ] && chunks+=(--edge-pairs $EDGE_PAIRS)
  [ -n "${RADIAL_TABLE:-}" ] && chunks+=(--radial-table $RADIAL_TABLE)
  [ "${MODEL_ONLY:-0}" = 1 ] && chunks+=(--model-only)
  "$PY" benchmarks/speed.py --device "$DEVICE" --peers "${peers[@]}" "${chunks[@]}" --models "${fam[@]}" \
    --structures ${STRUCTURES:-cu cuzr} --dtypes ${DTYPES:-float32 float64} --sizes "${sizes[@]}" \
    --float64-sizes "${sizes[@]:0:2}" $grow --max-atoms "$MAX_ATOMS" --kernels ${KERNELS:-e3nn cueq} \
    --repeats "$REPEATS" --budget "$BUDGET" --threads "${THREADS:-8}" \
    --deadline "$left" --out "$OUT/speed$name.md" >"$RES/speed$name.stdout" 2>"$RES/speed$name.stderr"
  log "speed.py pass $name exit $?"
  tail -5 "$RES/speed$name.stderr" >>"$LOG"
}
run_pass "" "${MODELS:-mace nequip painn schnet}" "$SIZES" "$([ "${GROW:-1}" = 1 ] && echo --grow)"
[ -n "${PASS2_MODELS:-}" ] && run_pass 2 "$PASS2_MODELS" "${PASS2_SIZES:-$SIZES}"

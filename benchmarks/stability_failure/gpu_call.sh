#!/usr/bin/env bash
# The failure study of issue 16 on a GPU machine, in two calls of <= 560 s (README.md).
#
#   OUT=$OUT bash benchmarks/stability_failure/gpu_call.sh call1   # train every checkpoint
#   OUT=$OUT bash benchmarks/stability_failure/gpu_call.sh call2   # MD study + report
#
# call1  one `geoff train` per core (run.py train-jobs: GPUs round robin, budgets from
#        costs.json), under CUDA MPS when the machine has it, stopped by the deadline; writes
#        OUT/train-<system>.tgz (best.ckpt, test_metrics.json, summary.json, metrics.csv,
#        logs; no last.ckpt) and OUT/call1.log.
# call2  needs call 1's OUT/train-*.tgz in CALL1 (default benchmarks/stability_failure/gpu/
#        call1/: put them there). First the replica speed rows (ethanol R=128, SchNet and
#        MACE-style, with and without the per-step checks: OUT/replicas_speed_gpu.json), then
#        one `geoff stability --only <checkpoint>` process per system, budget and checkpoint,
#        all at once (run.py md-jobs: NVT then the NVE leg, seeds batched as replicas,
#        censored at the deadline), then the report (from every run's metrics.json) and, with
#        the time left, each study's own tables: OUT/report.tgz (report/, logs, and where
#        collect finished every study's results.csv, summary.csv, report.md) and call2.log.
#
# Environment: DEADLINE_S (520: the call stops and packs by then), SYSTEMS ("ethanol
# cuzr-liquid"), GPUS (all the machine has; 0 on a CPU), JOBS (training processes at once:
# nproc), DEVICE (cuda), PYTHON (python3), WORK (a temporary folder), PILOT=1 (the config's
# CPU pilot: the tiny test of both calls on a CPU, with DEVICE=cpu).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
phase="${1:?usage: gpu_call.sh call1|call2}"
OUT="${OUT:?set OUT to the folder the results go to}"
T0=$(date +%s)
DEADLINE_S="${DEADLINE_S:-520}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
SYSTEMS="${SYSTEMS:-ethanol cuzr-liquid}"
JOBS="${JOBS:-$(nproc)}"
WORK="${WORK:-$(mktemp -d /tmp/sf-gpu.XXXXXX)}"
CALL1="${CALL1:-$here/gpu/call1}"
if [[ -z "${GPUS:-}" ]]; then
    GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
pilot=(); [[ "${PILOT:-0}" == 1 ]] && pilot=(--pilot --data-dir "$here/data")
mkdir -p "$OUT" "$WORK/sf"
exec > >(tee -a "$OUT/$phase.log") 2>&1
left() { echo $(( DEADLINE_S - ($(date +%s) - T0) )); }
say() { echo "gpu_call $phase [$(( $(date +%s) - T0 )) s]: $*"; }

# Python packages the GPU machine lacks travel as wheels in .whl/ (ase, matscipy)
if ! "$PYTHON" -c "import ase, matscipy" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$WORK/py" "$root"/.whl/*.whl || { say "wheel install failed"; exit 1; }
    export PYTHONPATH="$WORK/py"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
cd "$root"
say "$(nproc) cores, $GPUS GPUs, systems: $SYSTEMS, work $WORK"
[[ "$GPUS" -gt 0 ]] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

if [[ "$DEVICE" == cuda* ]] && command -v nvidia-cuda-mps-control >/dev/null; then
    # MPS lets the kernels of many small processes share a GPU instead of time-slicing it
    export CUDA_MPS_PIPE_DIRECTORY="$WORK/mps-pipe" CUDA_MPS_LOG_DIRECTORY="$WORK/mps-log"
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d && "$PYTHON" -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
        say "CUDA MPS on"
        trap 'echo quit | nvidia-cuda-mps-control' EXIT
    else
        echo quit | nvidia-cuda-mps-control 2>/dev/null
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        say "CUDA MPS not available: the processes time-slice the GPUs"
    fi
fi

run_jobs() {  # FILE PARALLEL SECONDS: the lines of FILE, PARALLEL at a time, all stopped after SECONDS
    say "$(wc -l < "$1") jobs, $2 at a time, stopped after $3 s"
    setsid xargs -P "$2" -d '\n' -I{} sh -c '{}' < "$1" &
    local pid=$!
    ( sleep "$3"; kill -TERM -- -"$pid" 2>/dev/null; sleep 10; kill -KILL -- -"$pid" 2>/dev/null ) &
    local watch=$!
    wait "$pid"
    kill "$watch" 2>/dev/null
    say "jobs done"
}

sf() { "$PYTHON" "$here/run.py" "$@" --out "$WORK/sf" --systems $SYSTEMS --device "$DEVICE" "${pilot[@]}"; }

case "$phase" in
call1)
    sf train-jobs --gpus "$GPUS" > "$WORK/train-jobs.txt" || exit 1
    run_jobs "$WORK/train-jobs.txt" "$JOBS" $(( $(left) - 40 ))
    for s in $SYSTEMS; do
        tar -czf "$OUT/train-$s.tgz" -C "$WORK/sf" --exclude=last.ckpt --exclude='*.png' \
            "train/$s" && ls -la "$OUT/train-$s.tgz"
    done
    "$PYTHON" - "$WORK/sf/train" <<'EOF'
import json, sys
from pathlib import Path
rows = []
for m in sorted(Path(sys.argv[1]).glob("*/*/test_metrics.json")):
    t = json.loads(m.read_text())
    s = json.loads((m.parent / "summary.json").read_text()) if (m.parent / "summary.json").exists() else {}
    rows.append(f"{m.parent.parent.name:12s} {m.parent.name:28s} F MAE {t.get('forces_mae_meV_A', float('nan')):8.1f} meV/A  epochs {s.get('epochs', '?')}  stopped by {s.get('stopped_by', '?')}")
print("\n".join(rows) or "no test metrics")
print(f"{len(rows)} checkpoints with test metrics")
EOF
    ;;
call2)
    for t in "$CALL1"/train-*.tgz; do
        [[ -f "$t" ]] && tar -xzf "$t" -C "$WORK/sf"
    done
    n_ckpt=$(ls "$WORK"/sf/train/*/*/best.ckpt 2>/dev/null | wc -l)
    say "$n_ckpt checkpoints from $CALL1"
    if [[ "$n_ckpt" -eq 0 ]]; then
        say "no checkpoints: put call 1's train-<system>.tgz in $CALL1 (or set CALL1)"; exit 1
    fi
    if [[ "$DEVICE" == cuda* ]]; then  # batched replica speed with and without the checks
        timeout 75 "$PYTHON" benchmarks/replicas_speed.py --device "$DEVICE" --replicas 128 \
            --models schnet mace --systems ethanol --steps 20 \
            --out "$OUT/replicas_speed_gpu.json" || say "replica speed stopped"
    fi
    md_s=$(( $(left) - 100 ))  # 100 s for the report, collect and packing
    sf md-jobs --gpus "$GPUS" --seconds "$md_s" > "$WORK/md-jobs.txt" || exit 1
    run_jobs "$WORK/md-jobs.txt" "$(wc -l < "$WORK/md-jobs.txt")" $(( md_s + 20 ))
    # the report reads every run's metrics.json: it comes first; collect (each study's own
    # results.csv and report) only with the time left
    timeout $(( $(left) - 40 )) "$PYTHON" "$here/run.py" report --out "$WORK/sf" \
        --systems $SYSTEMS "${pilot[@]}" || say "report failed or stopped"
    timeout $(( $(left) - 20 )) "$PYTHON" "$here/run.py" collect --out "$WORK/sf" \
        --systems $SYSTEMS "${pilot[@]}" > "$WORK/collect.log" 2>&1 || say "collect stopped"
    cp "$WORK/collect.log" "$WORK/sf/"
    (cd "$WORK/sf" && tar -czf "$OUT/report.tgz" report collect.log study/*/results.csv \
        study/*/summary.csv study/*/report.md study/*/models.csv study/*/config.yaml \
        study/*/logs train/*/*/test_metrics.json 2>/dev/null)
    ls -la "$OUT/report.tgz"
    ;;
*)
    sed -n '2,24p' "$0"; exit 2 ;;
esac
say "done"

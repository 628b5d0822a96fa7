#!/usr/bin/env bash
# The GPU work behind benchmarks/accuracy.md and benchmarks/stability/ (issues 4 and 5), as
# phases that each fit one call on a single-GPU machine: many small jobs share the GPU
# (one CPU core each; under CUDA MPS when the machine has it).
#
#   benchmarks/gpu_jobs.sh PHASE WORKDIR [RESULT.tgz]
#
# PHASE
#   stability-train     the nine checkpoints of the stability study (benchmarks/stability/train.sh)
#   stability-md        the stability study (benchmarks/stability/cu_emt.yaml), one process per
#                       model (stopped after MD_SECONDS, default 420: the runs are ordered seed
#                       by seed, so a stopped model has its first seeds complete), then one
#                       --report-only pass that writes the report; needs
#                       WORKDIR/stability/*.ckpt from the first phase
#   accuracy-metals     accuracy.py jobs (every model + mace-torch) on cu-emt and cuzr-eam
#   accuracy-molecules  the same on ethanol and aspirin
#   accuracy            all four (SETS="cuzr-eam ethanol" picks data sets for any accuracy
#                       phase, MODELS="schnet painn" the geoff models; mace-torch always runs)
# Data: DATA (default bench-data/) holds cu-emt/cuzr-eam/ethanol/aspirin.extxyz (geoff data,
# seeds and sizes in benchmarks/accuracy.md). Environment: PYTHON (python3), MACE_PYTHON (an
# interpreter with mace-torch; default PYTHON), JOBS (parallel jobs, default 16), MINUTES
# (budget of an accuracy job, default 6), DEVICE (cuda), JOBS_SECONDS (stop all jobs after
# this many seconds, so that a call with a time limit still packs its results).
# RESULT.tgz gets the small outputs (checkpoints, metrics, logs, reports; no trajectories).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
phase="$1"; work="$2"; result="${3:-}"
PYTHON="${PYTHON:-python3}"; MACE_PYTHON="${MACE_PYTHON:-$PYTHON}"
JOBS="${JOBS:-16}"; MINUTES="${MINUTES:-6}"; MD_SECONDS="${MD_SECONDS:-420}"; DEVICE="${DEVICE:-cuda}"; DATA="${DATA:-$root/bench-data}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$work"; work="$(cd "$work" && pwd)"
cd "$root"
t0=$(date +%s)

if [[ "$DEVICE" == cuda* ]] && command -v nvidia-cuda-mps-control >/dev/null; then
    # MPS lets the kernels of many small processes share the GPU instead of time-slicing it
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p /tmp/mps-pipe /tmp/mps-log
    if nvidia-cuda-mps-control -d && "$PYTHON" -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
        echo "gpu_jobs: CUDA MPS on"
    else
        echo quit | nvidia-cuda-mps-control 2>/dev/null
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        echo "gpu_jobs: CUDA MPS not available; the jobs time-slice the GPU"
    fi
fi

if [[ ! -d "$work/splits" ]]; then
    "$PYTHON" benchmarks/accuracy.py prepare --data-dir "$DATA" --out "$work/splits"
fi

run_jobs() {  # FILE: one shell line per job, JOBS at a time
    echo "gpu_jobs: $(wc -l < "$1") jobs, $JOBS at a time"
    if [[ -n "${JOBS_SECONDS:-}" ]]; then  # a hard stop, so that the results get packed
        timeout "$JOBS_SECONDS" xargs -P "$JOBS" -d '\n' -I{} sh -c '{}' < "$1"
    else
        xargs -P "$JOBS" -d '\n' -I{} sh -c '{}' < "$1"
    fi
    echo "gpu_jobs: jobs done after $(( $(date +%s) - t0 )) s"
}

case "$phase" in
stability-train)
    PYTHON="$PYTHON" benchmarks/stability/train.sh "$work/splits/cu-emt" "$work/stability" --print \
        --device "$DEVICE" --max-time 6.5 > "$work/jobs.txt"
    run_jobs "$work/jobs.txt"
    keep=(stability)
    ;;
stability-md)
    out="$work/stability-results"
    export GEOFF_CKPT_DIR="$work/stability" GEOFF_DEVICE="$DEVICE"
    cfg=benchmarks/stability/cu_emt.yaml
    models=$("$PYTHON" -c "import yaml,sys; print(' '.join(m['name'] for m in yaml.safe_load(open(sys.argv[1]))['models']))" "$cfg")
    : > "$work/jobs.txt"
    for m in ref:emt $models; do
        echo "timeout $MD_SECONDS $PYTHON -m geoff.cli stability $cfg --out $out --only $m --resume --no-progress > $work/md-${m/:/-}.log 2>&1" >> "$work/jobs.txt"
    done
    run_jobs "$work/jobs.txt"
    "$PYTHON" -m geoff.cli stability "$cfg" --out "$out" --report-only --no-progress 2>&1 | tail -5
    keep=(stability-results md-*.log)
    ;;
accuracy|accuracy-metals|accuracy-molecules)
    case "$phase" in
        accuracy-metals) sets="cu-emt cuzr-eam" ;;
        accuracy-molecules) sets="ethanol aspirin" ;;
        *) sets="cu-emt cuzr-eam ethanol aspirin" ;;
    esac
    sets="${SETS:-$sets}"
    models=(); [[ -n "${MODELS:-}" ]] && models=(--models $MODELS)
    "$PYTHON" benchmarks/accuracy.py commands --out "$work/splits" --device "$DEVICE" \
        --minutes "$MINUTES" --datasets $sets "${models[@]}" --python "$PYTHON" \
        --mace-python "$MACE_PYTHON" > "$work/jobs.txt"
    run_jobs "$work/jobs.txt"
    "$PYTHON" benchmarks/accuracy.py table --out "$work/splits" --datasets $sets "${models[@]}"
    # the shipped Cu64Zr36 models (examples/models/regenerate.sh); other weights stay behind
    mkdir -p "$work/shipped"
    for m in schnet painn nequip; do
        [[ -f "$work/splits/cuzr-eam/$m/best.ckpt" ]] && cp "$work/splits/cuzr-eam/$m/best.ckpt" "$work/shipped/cuzr_$m.ckpt"
    done
    keep=(splits shipped)
    ;;
*)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

if [[ -n "$result" ]]; then
    excl=(--exclude='*.extxyz' --exclude='last.ckpt' --exclude='trajectory.*')
    [[ "$phase" == accuracy* ]] && excl+=(--exclude='best.ckpt' --exclude='*.model' --exclude='*.pt')
    (cd "$work" && tar czf "$result" "${excl[@]}" "${keep[@]}" 2>/dev/null)
    ls -la "$result"
fi
echo "gpu_jobs: $phase done in $(( $(date +%s) - t0 )) s"

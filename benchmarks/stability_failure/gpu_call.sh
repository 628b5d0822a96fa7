#!/usr/bin/env bash
# The failure study of issue 16 on a GPU machine, in calls of <= 540 s (README.md).
#
#   OUT=$OUT bash benchmarks/stability_failure/gpu_call.sh call1   # train every checkpoint
#   OUT=$OUT bash benchmarks/stability_failure/gpu_call.sh call2   # MD study + report
#   OUT=$OUT bash benchmarks/stability_failure/gpu_call.sh call3   # aspirin + long MD + report
#   OUT=$OUT bash benchmarks/stability_failure/gpu_call.sh call4   # what call 3 left unfinished
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
# call3  ONE call (study.yaml's call3: block) with call 1's OUT/train-*.tgz in CALL1: trains
#        what is missing (aspirin, 2 budgets; CuZr's 3 untrained short runs; run.py
#        train-jobs --missing-only) while stage A's MD runs (ethanol, CuZr long: call 1's
#        checkpoints) and test_mae.py measures the checkpoints call 1 left untested; then
#        stage B's MD (aspirin, CuZr short); every MD process stops by DEADLINE_S - report_s
#        (censored), then the report over all three systems and each study's tables.
#        OUT/results.tgz (packed on exit, whatever finished: report/, every run's
#        metrics.json, logs, test metrics, the new checkpoints) and OUT/report.md, call3.log.
# call4  as call3 (study.yaml's call4: block), with call 3's checkpoints too (CALL3: every
#        *.tgz there, its train/ part) and only the checkpoints whose runs call 3 left
#        unfinished (PREV_CSV: call 3's failure.csv; merge.py: not started, missing, or NVT
#        censored): each runs its NVT and NVE leg again for the whole call; the report merges
#        them into PREV_CSV (a call-4 run replaces its call-3 row only if it went further;
#        column `call`). OUT/results.tgz, OUT/report.md, call4.log.
#
# Environment: DEADLINE_S (520: the call stops and packs by then), SYSTEMS ("ethanol
# cuzr-liquid"), GPUS (all the machine has; 0 on a CPU), JOBS (training processes at once:
# nproc), DEVICE (cuda), PYTHON (python3), WORK (a temporary folder), PILOT=1 (the config's
# CPU pilot: the tiny test of both calls on a CPU, with DEVICE=cpu).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
phase="${1:?usage: gpu_call.sh call1|call2|call3|call4}"
OUT="${OUT:?set OUT to the folder the results go to}"
T0=$(date +%s)
DEADLINE_S="${DEADLINE_S:-}"  # default: 520, call3: study.yaml's call3.deadline_s
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
JOBS="${JOBS:-$(OMP_NUM_THREADS= nproc)}"  # nproc obeys OMP_NUM_THREADS (call 1 saw 1)
WORK="${WORK:-$(mktemp -d /tmp/sf-gpu.XXXXXX)}"
CALL1="${CALL1:-$here/gpu/call1}"
CALL3="${CALL3:-$here/gpu/call3}"                  # call4: call 3's checkpoints (*.tgz)
PREV_CSV="${PREV_CSV:-$here/h200-call3/failure.csv}"  # call4: the runs it continues
if [[ -z "${GPUS:-}" ]]; then
    GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
pilot=(); [[ "${PILOT:-0}" == 1 ]] && pilot=(--pilot --data-dir "$here/data")
rerun=(); merge=()
if [[ "$phase" == call3 || "$phase" == call4 ]]; then  # the call's plan: study.yaml's callN
    eval "$("$PYTHON" "$here/run.py" "$phase-plan" --out "$WORK/sf" \
        ${SYSTEMS:+--systems $SYSTEMS} "${pilot[@]}")" || exit 1  # block (the pilot's: PILOT=1)
fi
if [[ "$phase" == call4 ]]; then
    [[ -f "$PREV_CSV" ]] || { echo "gpu_call call4: no $PREV_CSV (set PREV_CSV)"; exit 1; }
    rerun=(--rerun-from "$PREV_CSV"); merge=(--merge-with "$PREV_CSV")
fi
DEADLINE_S="${DEADLINE_S:-${PLAN_DEADLINE_S:-520}}"
SYSTEMS="${SYSTEMS:-${PLAN_SYSTEMS:-ethanol cuzr-liquid}}"
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
say "$(OMP_NUM_THREADS= nproc) cores, $GPUS GPUs, systems: $SYSTEMS, work $WORK"
[[ "$GPUS" -gt 0 ]] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

if [[ "$DEVICE" == cuda* ]] && command -v nvidia-cuda-mps-control >/dev/null; then
    # MPS lets the kernels of many small processes share a GPU instead of time-slicing it
    export CUDA_MPS_PIPE_DIRECTORY="$WORK/mps-pipe" CUDA_MPS_LOG_DIRECTORY="$WORK/mps-log"
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d && "$PYTHON" -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
        say "CUDA MPS on"
        MPS_ON=1
    else
        echo quit | nvidia-cuda-mps-control 2>/dev/null
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        say "CUDA MPS not available: the processes time-slice the GPUs"
    fi
fi

on_exit() {  # call3's results are packed whatever stopped the call; MPS is shut down
    [[ "$phase" == call3 || "$phase" == call4 ]] && pack3
    [[ "${MPS_ON:-0}" == 1 ]] && echo quit | nvidia-cuda-mps-control
}
trap on_exit EXIT

pack3() {  # OUT/results.tgz: what call 3 (4) made (small files; the new checkpoints to reuse)
    [[ -d "$WORK/sf" ]] || return 0
    cp -f "$WORK/sf/report/report.md" "$WORK/sf/report/failure_vs_mae.png" "$OUT/" 2>/dev/null
    (cd "$WORK/sf" && find report study -maxdepth 1 -type f 2>/dev/null
     find study -path '*/runs/*' -name metrics.json 2>/dev/null
     find study -path '*/logs/*' -name '*.log' 2>/dev/null
     find study -maxdepth 2 \( -name results.csv -o -name summary.csv -o -name report.md \
         -o -name models.csv -o -name config.yaml \) 2>/dev/null
     find train -maxdepth 3 \( -name test_metrics.json -o -name summary.json -o -name job.log \) \
         2>/dev/null
     for run in $(cat "$WORK/trained.txt" 2>/dev/null); do  # runs this call trained
         find "train/$run" -maxdepth 1 -type f ! -name last.ckpt ! -name '*.png' 2>/dev/null
     done; ls *.log *.txt *.json 2>/dev/null) | sort -u > "$WORK/pack.txt"
    tar -czf "$OUT/results.tgz" -C "$WORK/sf" -T "$WORK/pack.txt" && \
        say "packed $(wc -l < "$WORK/pack.txt") files: $(du -h "$OUT/results.tgz" | cut -f1)"
}

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

md_stage() {  # NAME "study:nice ..." [ARGS]: one job file of MD processes, all stopped by
    : > "$WORK/md-$1.txt"  # MD_UNTIL (ARGS: e.g. wait for the models still training)
    for item in $2; do
        sf md-jobs --gpus "$GPUS" --studies "${item%%:*}" --until "$MD_UNTIL" \
            --nice "${item##*:}" --cuda-graphs "$CUDA_GRAPHS" "${rerun[@]}" "${@:3}" \
            >> "$WORK/md-$1.txt" \
            || say "md-jobs ${item%%:*} failed"
    done
    run_jobs "$WORK/md-$1.txt" "$(wc -l < "$WORK/md-$1.txt")" $(( MD_UNTIL - $(date +%s) + 20 ))
}

graphs_check() {  # CUDA_GRAPHS (auto): kept only where captured forces equal the eager ones
    CUDA_GRAPHS="${CUDA_GRAPHS:-auto}"
    [[ "$CUDA_GRAPHS" == false ]] && { say "CUDA graphs off (CUDA_GRAPHS=false)"; return; }
    local e="$WORK/sf/train/ethanol" ckpts=()
    for c in schnet-conservative schnet-both mace-both nequip-conservative; do
        [[ -f "$e/$c-long/best.ckpt" ]] && ckpts+=("$e/$c-long/best.ckpt")
    done
    [[ ${#ckpts[@]} -eq 0 ]] && ckpts=("$e"/*/best.ckpt)
    timeout 90 "$PYTHON" "$here/graphs_check.py" --start "$here/data/ethanol.start.extxyz" \
        --device "$DEVICE" --json "$WORK/sf/graphs_check.json" "${ckpts[@]}"
    local rc=$?
    case $rc in
        0) say "CUDA graphs: captured forces equal the eager ones: cuda_graphs=$CUDA_GRAPHS" ;;
        2) CUDA_GRAPHS=false; say "CUDA graphs: not in this geoff (eager MD)" ;;
        *) CUDA_GRAPHS=false; say "CUDA graphs: check failed or disagreed (rc $rc): eager MD" ;;
    esac
}

call3() {  # and call4 (its plan, CALL3's checkpoints, rerun and merge)
    for t in "$CALL1"/train-*.tgz; do
        [[ -f "$t" ]] && tar -xzf "$t" -C "$WORK/sf"
    done
    say "$(ls "$WORK"/sf/train/*/*/best.ckpt 2>/dev/null | wc -l) checkpoints from $CALL1"
    if [[ "$phase" == call4 ]]; then  # call 3's new checkpoints and test metrics
        for t in "$CALL3"/*.tgz; do
            [[ -f "$t" ]] && tar -xzf "$t" -C "$WORK/sf" --wildcards 'train/*'
        done
        say "$(ls "$WORK"/sf/train/*/*/best.ckpt 2>/dev/null | wc -l) checkpoints with $CALL3;" \
            "continuing $PREV_CSV"
    fi
    MD_UNTIL=$(( T0 + DEADLINE_S - PLAN_REPORT_S ))
    # training: what has no checkpoint yet, all at once (one core each), stopped at train_until
    sf train-jobs --gpus "$GPUS" --missing-only > "$WORK/train-jobs.txt" || exit 1
    sed -n 's/.* --out \([^ ]*\)\/train\/\([^ ]*\) --overwrite.*/\2/p' "$WORK/train-jobs.txt" \
        > "$WORK/trained.txt"
    run_jobs "$WORK/train-jobs.txt" "$(wc -l < "$WORK/train-jobs.txt")" \
        $(( PLAN_TRAIN_UNTIL_S - ($(date +%s) - T0) )) &
    local train=$!
    # test errors of call 1's checkpoints that its clock left untested (the report needs them)
    timeout $(( MD_UNTIL - $(date +%s) )) "$PYTHON" "$here/test_mae.py" \
        "$WORK/sf/train" --device "$DEVICE" --data-dir "$here/data" \
        --skip "$WORK/trained.txt" > "$WORK/test_mae.log" 2>&1 &
    local mae=$!
    graphs_check
    # stages A and B at once: a model still being trained (in trained.txt) starts its MD when
    # its training has written summary.json (call 3 trains only stage B's models)
    local wait=(--wait-for "$WORK/trained.txt" --wait-until $(( T0 + PLAN_TRAIN_UNTIL_S + 5 )))
    say "stage A: $PLAN_STAGE_A; MD stops at $(( MD_UNTIL - T0 )) s"
    md_stage a "$PLAN_STAGE_A" "${wait[@]}" &
    local stage_a=$!
    say "stage B: $PLAN_STAGE_B (each when its model is trained, by $PLAN_TRAIN_UNTIL_S s)"
    md_stage b "$PLAN_STAGE_B" "${wait[@]}" &
    local stage_b=$!
    wait "$train"
    say "training done: $(ls "$WORK"/sf/train/*/*/best.ckpt | wc -l) checkpoints"
    say "stage C: ${PLAN_STAGE_C:-none}"
    md_stage c "$PLAN_STAGE_C" &
    local stage_c=$!
    # and of this call's runs that train_until stopped before their test
    timeout $(( MD_UNTIL - $(date +%s) )) "$PYTHON" "$here/test_mae.py" \
        "$WORK/sf/train" --device "$DEVICE" --data-dir "$here/data" \
        --only "$WORK/trained.txt" > "$WORK/test_mae_new.log" 2>&1 &
    local mae_new=$!
    wait "$mae" "$mae_new"; cat "$WORK"/test_mae*.log
    wait "$stage_a" "$stage_b" "$stage_c"
    say "MD done: $(find "$WORK/sf/study" -path '*/runs/*' -name metrics.json | wc -l) runs"
    if [[ "$phase" == call4 ]]; then  # the merged report only, all cores on it (call 3's ran
        # out of time beside collect): first without the liquid's RDF criterion (seconds), then
        # with it (reads every CuZr trajectory), over the first if it finishes
        timeout 30 "$PYTHON" "$here/run.py" report --out "$WORK/sf" --systems $SYSTEMS \
            --no-rdf "${merge[@]}" "${pilot[@]}" > "$WORK/report-nordf.log" 2>&1 \
            && say "report without the RDF criterion written" || say "report without RDF failed"
        cp -r "$WORK/sf/report" "$WORK/report-nordf" 2>/dev/null
        if [[ $(left) -gt 20 ]] && timeout $(( $(left) - 12 )) "$PYTHON" "$here/run.py" report \
            --out "$WORK/sf" --systems $SYSTEMS --workers "$JOBS" "${merge[@]}" "${pilot[@]}" \
            > "$WORK/report.log" 2>&1; then
            say "report with the RDF criterion written"
        elif [[ -d "$WORK/report-nordf" ]]; then  # not half of one report over the other
            rm -rf "$WORK/sf/report" && mv "$WORK/report-nordf" "$WORK/sf/report"
            say "report with RDF failed, stopped or not started ($(left) s left): report/ is" \
                "the one without the RDF criterion"
        fi
        cat "$WORK/report-nordf.log" "$WORK/report.log" 2>/dev/null
        cp "$WORK"/*.log "$WORK"/*.txt "$WORK/sf/" 2>/dev/null
        return
    fi
    # the report (every run's metrics.json) and each study's own tables, side by side
    timeout $(( $(left) - 12 )) "$PYTHON" "$here/run.py" report --out "$WORK/sf" \
        --systems $SYSTEMS --workers "$(( JOBS / 2 > 1 ? JOBS / 2 : 1 ))" "${pilot[@]}" \
        > "$WORK/report.log" 2>&1 &
    local report=$!
    timeout $(( $(left) - 12 )) "$PYTHON" "$here/run.py" collect --out "$WORK/sf" \
        --systems $SYSTEMS "${pilot[@]}" > "$WORK/collect.log" 2>&1 || say "collect stopped"
    wait "$report" || say "report failed or stopped"
    cat "$WORK/report.log"
    cp "$WORK"/*.log "$WORK"/*.txt "$WORK/sf/" 2>/dev/null
}

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
call3|call4)
    call3 ;;
*)
    sed -n '2,40p' "$0"; exit 2 ;;
esac
say "done"

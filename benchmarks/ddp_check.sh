#!/usr/bin/env bash
# DDP check: the same training on 1 GPU and on N GPUs (torchrun, DistributedDataParallel).
#
#   benchmarks/ddp_check.sh [DATA.extxyz]
#
# 1. Agreement: float64, deterministic, no EMA, 2 epochs, the same global batch: the per-epoch
#    train and validation losses of 1 and N processes must agree to ~1e-9 (only the order of
#    the gradient all-reduce differs).
# 2. Speed: float32, EPOCHS epochs of a larger SchNet; mean epoch time (first epoch left out:
#    warm-up) of 1 and N processes, their losses, and the speed-up.
#
# Without DATA it generates N Cu EMT structures (geoff.data.cu_emt, seed 0) into $OUTDIR.
# Environment: PYTHON (python3), NGPU (2), DEVICE (cuda; 'cpu' runs the same check with gloo
# on CPU processes), N (2000), EPOCHS (5), BATCH (256, global), FEATURES (256),
# OUTDIR (runs/ddp_check). The work per step must be large enough for a second GPU to pay:
# SchNet steps of 64 structures x 128 features take ~17 ms on one H200, almost all of it
# kernel launches and Python, and two GPUs were slower (0.83x).
# Needs torch, ase, matscipy, pyyaml, tqdm, matplotlib; geoff is taken from this checkout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
NGPU=${NGPU:-2}
DEVICE=${DEVICE:-cuda}
N=${N:-2000}
EPOCHS=${EPOCHS:-5}
BATCH=${BATCH:-256}
FEATURES=${FEATURES:-256}
OUT=${OUTDIR:-$ROOT/runs/ddp_check}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
DATA=${1:-$OUT/cu$N.extxyz}

if [ ! -f "$DATA" ]; then
    echo "== generating $N Cu EMT structures -> $DATA"
    "$PY" -W ignore -c "
import sys
from geoff.data.cu_emt import generate
from geoff.data.io import write_dataset
frames, _ = generate(int(sys.argv[2]), seed=0)
write_dataset(frames, sys.argv[1])" "$DATA" "$N"
fi

if [ "$DEVICE" = cuda ]; then
    have=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
    if [ "$have" -lt "$NGPU" ]; then
        echo "need $NGPU GPUs, torch sees $have" >&2
        exit 1
    fi
    THREADS=4
else
    THREADS=1
fi

common=(--data "$DATA" --model schnet --cutoff 5.0 --device "$DEVICE" --seed 0
        --val-fraction 0.1 --test-fraction 0.1 --no-progress --overwrite
        --num-threads "$THREADS" --checkpoint-every 0)
launch() {  # nproc, args...
    local n=$1
    shift
    if [ "$n" -eq 1 ]; then
        "$PY" -m geoff.cli train "$@"
    else
        "$PY" -m torch.distributed.run --standalone --nproc_per_node "$n" -m geoff.cli train "$@"
    fi
}

echo "== 1. agreement: float64, deterministic, 1 vs $NGPU processes"
exact=(--dtype float64 --deterministic --ema-decay 0 --epochs 2 --batch-size 16
       --hparams n_features=32 n_layers=2 n_rbf=16 --warmup-steps 10 --lr 1e-3
       --energy-weight 1)  # a gentle trajectory: rounding differences are not amplified
launch 1 "${common[@]}" "${exact[@]}" --out "$OUT/exact_1" > "$OUT/exact_1.log" 2>&1
launch "$NGPU" "${common[@]}" "${exact[@]}" --out "$OUT/exact_$NGPU" > "$OUT/exact_$NGPU.log" 2>&1

echo "== 2. speed: float32, $EPOCHS epochs, global batch $BATCH, n_features=$FEATURES"
speed=(--dtype float32 --epochs "$EPOCHS" --batch-size "$BATCH" --val-batch-size 128
       --hparams n_features="$FEATURES" n_layers=3 n_rbf=32 --lr 2e-3 --warmup-steps 5)
launch 1 "${common[@]}" "${speed[@]}" --out "$OUT/speed_1" > "$OUT/speed_1.log" 2>&1
launch "$NGPU" "${common[@]}" "${speed[@]}" --out "$OUT/speed_$NGPU" > "$OUT/speed_$NGPU.log" 2>&1

"$PY" - "$OUT" "$NGPU" <<'EOF'
import csv, json, sys
out, n = sys.argv[1], int(sys.argv[2])
rows = lambda run: list(csv.DictReader(open(f"{out}/{run}/metrics.csv")))
ok = True
print("\nagreement (float64): epoch, train loss 1 vs %d, val loss 1 vs %d, max rel. diff" % (n, n))
for a, b in zip(rows("exact_1"), rows(f"exact_{n}")):
    diffs = [abs(float(a[k]) - float(b[k])) / abs(float(a[k])) for k in ("train_loss", "val_loss")]
    ok &= max(diffs) < 1e-6
    print(f"  {a['epoch']:>3}  {float(a['train_loss']):.9e} {float(b['train_loss']):.9e}  "
          f"{float(a['val_loss']):.9e} {float(b['val_loss']):.9e}  {max(diffs):.1e}")
print("\nspeed (float32): epoch, epoch time s, train loss, val loss, val force MAE meV/A (1 | %d)" % n)
r1, rn = rows("speed_1"), rows(f"speed_{n}")
for a, b in zip(r1, rn):
    print(f"  {a['epoch']:>3}  {float(a['epoch_time_s']):7.2f} {float(b['epoch_time_s']):7.2f}   "
          f"{float(a['train_loss']):.4e} {float(b['train_loss']):.4e}   "
          f"{float(a['val_loss']):.4e} {float(b['val_loss']):.4e}   "
          f"{float(a['val_forces_mae_meV_A']):6.1f} {float(b['val_forces_mae_meV_A']):6.1f}")
mean = lambda r: sum(float(x["epoch_time_s"]) for x in r[1:]) / max(len(r) - 1, 1)
t1, tn = mean(r1), mean(rn)
print(f"\nmean epoch time (epochs 2..): 1 process {t1:.2f} s, {n} processes {tn:.2f} s, "
      f"speed-up {t1 / tn:.2f}x")
for run in ("speed_1", f"speed_{n}"):
    m = json.load(open(f"{out}/{run}/test_metrics.json"))
    print(f"test ({run}): energy MAE {m['energy_mae_meV_atom']:.2f} meV/atom, "
          f"force MAE {m['forces_mae_meV_A']:.1f} meV/A")
print("agreement:", "OK" if ok else "MISMATCH (float64 losses differ by more than 1e-6)")
print("(float32 runs on GPUs are not bitwise reproducible: atomics in index_add; chaotic "
      "training amplifies that, so the speed runs' losses agree only at first)")
sys.exit(0 if ok else 1)
EOF

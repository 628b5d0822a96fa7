#!/usr/bin/env bash
# Regenerates the shipped models in examples/models/.
#
#   examples/models/regenerate.sh                 # everything, on this machine (CPU: hours)
#   GEOFF_DEVICE=cuda examples/models/regenerate.sh
#
# cu_schnet:              `geoff data cu-emt --n 500 --seed 0`, cu_schnet.config.yaml (~5 min, 2 cores)
# cu_painn, cu_nequip:    the conservative PaiNN/NequIP of the stability study
#                         (benchmarks/stability/train.sh), `geoff data cu-emt --n 1000 --seed 0`
# cuzr_{schnet,painn,nequip}: Cu64Zr36 runs on the accuracy benchmark's split
#                         (`geoff data cuzr-eam --n 300 --seed 0`, 240/30/30 with seed 0),
#                         each from its cuzr_NAME.config.yaml (cutoff 7.6 Å, model defaults,
#                         its recorded time cap: 6-7 min on a GPU shared with other jobs, see
#                         benchmarks/accuracy.md; on a CPU give far more with MINUTES=...)
# Each NAME.ckpt comes with NAME.config.yaml (the effective training options) and
# NAME.test_metrics.json (float64 test MAEs on the held-out split).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
DEVICE="${GEOFF_DEVICE:-auto}"
MINUTES="${MINUTES:-}"  # training minutes of the cuzr_* models (default: as recorded in their configs)

collect() {  # RUN_DIR NAME: copy a finished run into examples/models/NAME.*
    cp "$1/best.ckpt" "$here/$2.ckpt"
    cp "$1/config.yaml" "$here/$2.config.yaml"
    cp "$1/test_metrics.json" "$here/$2.test_metrics.json"
}

work=$(mktemp -d)
cd "$root"
# cu_schnet (the model of the README, the demo's defaults and the LAMMPS decks)
"$PYTHON" -m geoff.cli data cu-emt -o "$work/cu.extxyz" --n 500 --seed 0 --quiet
"$PYTHON" -m geoff.cli train --config "$here/cu_schnet.config.yaml" --data "$work/cu.extxyz" \
    --out "$work/cu_schnet" --overwrite --device "$DEVICE"
collect "$work/cu_schnet" cu_schnet
"$PYTHON" -m geoff.cli export "$here/cu_schnet.ckpt" -o "$here/cu_schnet.pt" --dtype float64
# the data of the other models, split as in the accuracy benchmark
"$PYTHON" -m geoff.cli data cu-emt -o "$work/data/cu-emt.extxyz" --n 1000 --seed 0 --quiet
"$PYTHON" -m geoff.cli data cuzr-eam -o "$work/data/cuzr-eam.extxyz" --n 300 --seed 0 --quiet
"$PYTHON" benchmarks/accuracy.py prepare --data-dir "$work/data" --out "$work/splits"
# cu_painn, cu_nequip: the conservative models of the stability study
PYTHON="$PYTHON" benchmarks/stability/train.sh "$work/splits/cu-emt" "$work/stability" --device "$DEVICE"
collect "$work/stability/painn-conservative" cu_painn
collect "$work/stability/nequip-conservative" cu_nequip
# cuzr_*: each with its own recorded options (batch size, time cap) on the benchmark's split
for name in schnet painn nequip; do
    d="$work/splits/cuzr-eam"
    "$PYTHON" -m geoff.cli train --config "$here/cuzr_$name.config.yaml" --data "$d/train.extxyz" \
        --val-data "$d/val.extxyz" --test-data "$d/test.extxyz" --out "$d/$name" --overwrite \
        --device "$DEVICE" ${MINUTES:+--max-time "$MINUTES"}
    collect "$d/$name" "cuzr_$name"
done
echo "models regenerated in $here (work files in $work)"

#!/usr/bin/env bash
# Regenerates the shipped models in examples/models/.
#
#   examples/models/regenerate.sh                 # everything, on this machine (CPU: hours)
#   GEOFF_DEVICE=cuda examples/models/regenerate.sh
#
# cu_schnet:              `geoff data cu-emt --n 500 --seed 0`, cu_schnet.config.yaml (~5 min, 2 cores)
# cu_painn, cu_nequip:    the conservative PaiNN/NequIP of the stability study
#                         (benchmarks/stability/train.sh), `geoff data cu-emt --n 1000 --seed 0`
# cuzr_{schnet,painn,nequip}: the Cu64Zr36 runs of the accuracy benchmark (benchmarks/accuracy.py:
#                         `geoff data cuzr-eam --n 300 --seed 0`, split 240/30/30 with seed 0,
#                         cutoff 7.6 Å, defaults of each model, MINUTES of training each:
#                         6 on one GPU as in benchmarks/accuracy.md; give a CPU far more)
# Each NAME.ckpt comes with NAME.config.yaml (the effective training options) and
# NAME.test_metrics.json (float64 test MAEs on the held-out split).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
DEVICE="${GEOFF_DEVICE:-auto}"
MINUTES="${MINUTES:-6}"

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
"$PYTHON" benchmarks/accuracy.py commands --out "$work/splits" --datasets cuzr-eam \
    --models schnet painn nequip --no-mace --device "$DEVICE" --minutes "$MINUTES" \
    --python "$PYTHON" | while read -r line; do eval "$line"; done
for name in schnet painn nequip; do collect "$work/splits/cuzr-eam/$name" "cuzr_$name"; done
echo "models regenerated in $here (work files in $work)"

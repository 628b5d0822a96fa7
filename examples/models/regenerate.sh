#!/usr/bin/env bash
# Regenerates the shipped models in examples/models/.
#
#   examples/models/regenerate.sh                 # everything, on this machine (CPU: hours)
#   GEOFF_DEVICE=cuda examples/models/regenerate.sh
#   examples/models/regenerate.sh --print SPLITS OUT   # only print the training commands
#
# cu_schnet:              `geoff data cu-emt --n 500 --seed 0`, cu_schnet.config.yaml (~5 min, 2 cores)
# cu_painn, cu_nequip:    the conservative PaiNN/NequIP of the stability study
#                         (benchmarks/stability/train.sh), `geoff data cu-emt --n 1000 --seed 0`
# cuzr_{schnet,painn,nequip}: `geoff data cuzr-eam --n 300 --seed 0`, split as in
#                         benchmarks/accuracy.py (240/30/30, seed 0), 80 epochs, cutoff 6 Å
# Each NAME.ckpt comes with NAME.config.yaml (the effective training options) and
# NAME.test_metrics.json (float64 test MAEs on the held-out split).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
DEVICE="${GEOFF_DEVICE:-auto}"

cuzr_commands() {  # SPLIT_DIR OUT_DIR: one line per CuZr model
    local split="$1" out="$2" name hp
    for spec in "schnet:n_features=64 n_layers=3 n_rbf=32" "painn:n_features=64 n_layers=3 n_rbf=20" "nequip:n_layers=3"; do
        name="${spec%%:*}"; hp="${spec#*:}"
        echo "mkdir -p $out/cuzr_$name && OMP_NUM_THREADS=1 $PYTHON -m geoff.cli train --data $split/train.extxyz --val-data $split/val.extxyz --test-data $split/test.extxyz --model $name --cutoff 6.0 --hparams $hp --batch-size 4 --epochs 80 --scheduler cosine --early-stopping 0 --seed 0 --num-threads 1 --no-progress --device $DEVICE --out $out/cuzr_$name --overwrite > $out/cuzr_$name.log 2>&1"
    done
}

collect() {  # RUN_DIR NAME: copy a finished run into examples/models/NAME.*
    cp "$1/best.ckpt" "$here/$2.ckpt"
    cp "$1/config.yaml" "$here/$2.config.yaml"
    cp "$1/test_metrics.json" "$here/$2.test_metrics.json"
}

if [[ "${1:-}" == "--print" ]]; then cuzr_commands "$2" "$3"; exit 0; fi

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
cuzr_commands "$work/splits/cuzr-eam" "$work" | while read -r line; do eval "$line"; done
for name in schnet painn nequip; do collect "$work/cuzr_$name" "cuzr_$name"; done
echo "models regenerated in $here (work files in $work)"

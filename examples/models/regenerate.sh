#!/usr/bin/env bash
# Regenerates the shipped Cu SchNet (examples/models/cu_schnet.{ckpt,pt}): about 5 min on 2 cores.
# Data: `geoff data cu-emt --n 500 --seed 0` (EMT, see its provenance JSON); split seed 0.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
geoff data cu-emt -o "$work/cu.extxyz" --n 500 --seed 0 --quiet
geoff train --config cu_schnet.config.yaml --data "$work/cu.extxyz" --out "$work/cu_schnet" --overwrite
cp "$work/cu_schnet/best.ckpt" cu_schnet.ckpt
cp "$work/cu_schnet/test_metrics.json" cu_schnet.test_metrics.json
geoff export cu_schnet.ckpt -o cu_schnet.pt --dtype float64

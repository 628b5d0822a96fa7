#!/usr/bin/env bash
# Train the nine checkpoints of the stability study at matched budgets:
# {schnet,painn,nequip} x {conservative,direct,both}, same data split, same representation
# hyper-parameters, same 60 epochs (cosine schedule, batch 8), same seed.
#
#   benchmarks/stability/train.sh SPLIT_DIR OUT_DIR [--print] [extra geoff train flags]
#
# SPLIT_DIR: train/val/test.extxyz of cu-emt (`python benchmarks/accuracy.py prepare`, from
#            `geoff data cu-emt --n 1000 --seed 0`). OUT_DIR gets <arch>-<head>/ run folders and
#            <arch>-<head>.ckpt copies for run.sh. --print writes the nine commands instead of
#            running them one after the other (to run them in parallel, e.g. with xargs -P).
# The loss weights of a "both" model put the same weight (10) on the conservative and the
# direct forces, so neither head is favoured; a "direct" model's force loss is on its direct
# head (stress, where present, stays conservative and is not fitted).
set -euo pipefail
if [[ $# -lt 2 ]]; then sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
split="$1"; out="$2"; shift 2
print=0
if [[ "${1:-}" == "--print" ]]; then print=1; shift; fi
PYTHON="${PYTHON:-python3}"
mkdir -p "$out"
declare -A HP=(
    [schnet]="n_features=64 n_layers=3 n_rbf=32"
    [painn]="n_features=64 n_layers=3 n_rbf=20"
    [nequip]="n_layers=3"
)
for arch in schnet painn nequip; do
    for head in conservative direct both; do
        run="$out/$arch-$head"
        cmd="OMP_NUM_THREADS=1 $PYTHON -m geoff.cli train --data $split/train.extxyz --val-data $split/val.extxyz --test-data $split/test.extxyz --model $arch --cutoff 5.0 --force-head $head --hparams ${HP[$arch]} --forces-weight 10 --direct-forces-weight 10 --batch-size 8 --epochs 60 --scheduler cosine --early-stopping 0 --seed 0 --num-threads 1 --no-progress --out $run --overwrite $* && cp $run/best.ckpt $out/$arch-$head.ckpt"
        if [[ $print == 1 ]]; then
            echo "mkdir -p $run && ( $cmd ) > $run.log 2>&1"
        else
            mkdir -p "$run"; eval "$cmd"
        fi
    done
done

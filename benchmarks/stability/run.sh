#!/usr/bin/env bash
# Regenerate the stability study of conservative vs direct vs both-head models on EMT Cu.
#
#   benchmarks/stability/run.sh CKPT_DIR [OUT_DIR] [more `geoff stability` flags]
#
# CKPT_DIR: {schnet,painn,nequip}-{conservative,direct,both}.ckpt (see cu_emt.yaml).
# OUT_DIR:  default benchmarks/stability/results (report.md, CSVs and PNGs are meant to be
#           committed; the per-run trajectories under runs/ are git-ignored).
# GEOFF_DEVICE=cuda runs the models on a GPU; PYTHON picks the interpreter (default: the
# repository's .venv, else python3). Extra flags, e.g. `--seeds 0 --resume`, go to geoff.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [[ $# -lt 1 ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
ckpt="$(cd "$1" && pwd)"
out="${2:-$here/results}"
shift $(( $# >= 2 ? 2 : 1 ))
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
missing=0
for arch in schnet painn nequip; do
    for head in conservative direct both; do
        if [[ ! -f "$ckpt/$arch-$head.ckpt" ]]; then
            echo "run.sh: missing $ckpt/$arch-$head.ckpt (its models will be reported as not run)" >&2
            missing=$((missing + 1))
        fi
    done
done
export GEOFF_CKPT_DIR="$ckpt"
"$PYTHON" -m geoff.cli stability "$here/cu_emt.yaml" --out "$out" "$@"
if [[ -f "$out/report.md" ]]; then echo "report: $out/report.md"; fi

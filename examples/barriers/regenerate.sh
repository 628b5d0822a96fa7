#!/usr/bin/env bash
# Regenerate the shipped Cu64Zr36 barrier set (examples/barriers/cuzr_barriers.extxyz, its
# provenance JSON and histogram PNG): GLASSES glasses of N_ATOMS atoms, ATTEMPTS ART-style
# activation attempts per atom, over JOBS worker processes, no attempt started after
# DEADLINE_S seconds. The shipped set came from benchmarks/barriers_data_gpu.sh (the same
# command on 32 cores); its exact settings and seeds are in the provenance JSON.
# Usage: [GLASSES=32] [N_ATOMS=200] [ATTEMPTS=2] [JOBS=nproc] [DEADLINE_S=] [SEED=1] \
#        examples/barriers/regenerate.sh
set -euo pipefail
cd "$(dirname "$0")"
GEOFF=${GEOFF:-../../.venv/bin/geoff}
"$GEOFF" data cuzr-barriers -o cuzr_barriers.extxyz --n "${GLASSES:-32}" \
    --n-atoms "${N_ATOMS:-200}" --attempts "${ATTEMPTS:-2}" --jobs "${JOBS:-$(nproc)}" \
    --seed "${SEED:-1}" ${DEADLINE_S:+--deadline-s "$DEADLINE_S"} --quiet

#!/usr/bin/env bash
# Cu64Zr36 barrier data (geoff data cuzr-barriers) on all CPU cores of the GPU machine, in
# one 600-s call: one serial LAMMPS (eam/fs) per worker process, glasses and atoms in
# parallel, no attempt started after DEADLINE_S; then one merged extxyz, its provenance
# (statistics) and the histogram, all under $OUT.
# The GPU is not used. Needs (carried with the tree, see benchmarks/lammps_scaling_gpu.sh):
#   .whl/ase-*.whl (+ other wheels), build/gpu/lammps-mpich.tar.gz (BUNDLE), and the Mendelev
#   potential, which the bundle leaves out: copy .venv/lib/python3.*/site-packages/lammps/
#   share/lammps/potentials/CuZr_mm.eam.fs to .whl/ (or set GEOFF_EAM_POTENTIAL).
#   OUT=$OUT bash benchmarks/barriers_data_gpu.sh
# Overrides: JOBS (nproc), GLASSES (32), N_ATOMS (200), ATTEMPTS (2), DEADLINE_S (470),
# SEED (1). Locally (the .venv has lammps; no bundle):
#   PYTHON=.venv/bin/python JOBS=2 GLASSES=2 N_ATOMS=32 DEADLINE_S=60 OUT=/tmp/b \
#     bash benchmarks/barriers_data_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
V=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d /tmp/geoff-barriers.XXXXXX)}
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
LOG="$OUT/barriers_data.log"
exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1  # one core per worker
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
if ! "$V" -c "import ase" 2>/dev/null; then
  "$V" -m pip install -q --no-deps --no-index --target "$WORK/py" .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$WORK/py"
fi
BUNDLE=${BUNDLE:-build/gpu/lammps-mpich.tar.gz}
if ! "$V" -c "import lammps" 2>/dev/null; then
  PREFIX="$WORK/prefix"
  SITE_REL=$("$V" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
  mkdir -p "$PREFIX"
  tar -xzf "$BUNDLE" -C "$PREFIX" --transform "s,lib/python3[.0-9]*/site-packages,$SITE_REL,"
  export PYTHONPATH="$PYTHONPATH:$PREFIX/$SITE_REL" PATH="$PREFIX/bin:$PATH"
fi
if [ -z "${GEOFF_EAM_POTENTIAL:-}" ]; then
  for f in .whl/CuZr_mm.eam.fs build/gpu/CuZr_mm.eam.fs; do
    [ -f "$f" ] && export GEOFF_EAM_POTENTIAL="$(pwd)/$f" && break
  done
fi
"$V" -c "from geoff.data.cuzr_eam import potential_file; print('potential:', potential_file())"
JOBS=${JOBS:-$(nproc)}
echo "setup: $(( $(date +%s) - T0 )) s; $JOBS workers; load: $(cut -d' ' -f1-3 /proc/loadavg)"
DATA="$OUT/cuzr_barriers.extxyz"
# The generator writes each glass to $OUT/cuzr_barriers_glasses/ as it finishes; if it is
# killed (timeout), the merge below still joins the finished glasses.
timeout "${GENERATOR_TIMEOUT_S:-540}" "$V" -m geoff.cli data cuzr-barriers -o "$DATA" \
  --n "${GLASSES:-32}" --n-atoms "${N_ATOMS:-200}" --attempts "${ATTEMPTS:-2}" \
  --jobs "$JOBS" --deadline-s "${DEADLINE_S:-470}" --seed "${SEED:-1}" --quiet \
  || echo "generator stopped early (rc $?); merging the finished glasses"
if [ ! -f "$DATA" ]; then
  "$V" -m geoff.data.barrier_merge "$DATA" "$OUT"/cuzr_barriers_glasses/glass_*.extxyz
fi
"$V" - "$DATA" <<'PY'
import json, sys
from geoff.data.io import read_provenance
p = read_provenance(sys.argv[1])
keys = ("attempts", "attempt_outcomes", "converged_fraction", "accepted_fraction",
        "labelled_atoms", "labelled_atoms_per_glass", "force_calls_per_attempt",
        "seconds_per_attempt", "barrier_mean_eV", "event_barriers_eV", "seconds_per_glass",
        "wall_time_s")
print(json.dumps({k: p.get(k) for k in keys}, indent=1))
PY
echo "total: $(( $(date +%s) - T0 )) s; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# Sourced (from the repository root) by the one-call GPU scripts: the clock, the folders and
# the log they share. Set TAG (the work folder's name) and DEFAULT_DEADLINE_S first.
# Defines T0, END (nothing new starts after it), V (python), DEV (cuda, or cpu for a dry
# run), WORK, OUT, RES (everything packed at the end), stamp and left; tees all output to
# $OUT/run.log.
set -uo pipefail
T0=$(date +%s)
END=$((T0 + ${DEADLINE_S:-$DEFAULT_DEADLINE_S}))
V=${PYTHON:-python3}
DEV=${DEVICE:-cuda}
WORK=${WORK:-$(mktemp -d "/tmp/geoff-$TAG.XXXXXX")}
OUT=${OUT:-$WORK/out}
RES="$WORK/results"
mkdir -p "$OUT" "$RES" "$WORK/py"
exec > >(tee -a "$OUT/run.log") 2>&1
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( END - $(date +%s) )); }

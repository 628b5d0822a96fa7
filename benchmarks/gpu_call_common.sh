# Sourced (from the repository root) by the one-call GPU scripts: the clock, the folders and
# the log they share. Set TAG (the work folder's name) and DEFAULT_DEADLINE_S first.
# Defines T0, END (nothing new starts after it), V (python), DEV (cuda, or cpu for a dry
# run), WORK, OUT, RES (everything packed at the end), stamp and left; tees all output to
# $OUT/run.log; install_whl installs the carried .whl/ wheels, install_cueq the carried
# cuEquivariance wheels (.peers/cueq/); pack_tables TABLE... (for trap EXIT) copies run.log
# and the named tables to $OUT and packs $RES; pack_joined joins tables under one title;
# gpu_tests runs pytest on this tree with the carried wheels.
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
install_whl() {  # the carried wheels (.whl/: ase, matscipy, ...) into $WORK/py
  stamp "installing the carried wheels"
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$V" -m pip install -q --no-deps --no-index --target "$WORK/py" .whl/*.whl \
      || stamp "WARNING: pip install of .whl/ failed"
  else
    stamp "WARNING: no .whl/ (ase, matscipy must be importable already)"
  fi
}
pack_tables() {  # on exit: run.log and the tables named ($RES/<name>) to $OUT, all of $RES packed
  cp -f "$OUT/run.log" "$RES/" 2>/dev/null
  local table
  for table in "$@"; do [ -f "$RES/$table" ] && cp -f "$RES/$table" "$OUT/"; done
  tar -czf "$OUT/results.tar.gz" -C "$WORK" results && stamp "packed $OUT/results.tar.gz"
}
pack_joined() {  # pack_joined <out.md> <title> <file>... (for trap EXIT): the named $RES files
  # joined under one title into $RES/<out.md> and $OUT, run.log kept, all of $RES packed
  local out=$1 title=$2 f; shift 2
  cp -f "$OUT/run.log" "$RES/" 2>/dev/null
  { echo "# $title"; echo
    for f in "$@"; do [ -f "$RES/$f" ] && { echo "## $f"; echo; cat "$RES/$f"; echo; }; done
  } > "$RES/$out"
  cp -f "$RES/$out" "$OUT/"
  tar -czf "$OUT/results.tar.gz" -C "$WORK" results && stamp "packed $OUT/results.tar.gz"
}
install_cueq() {  # .peers/cueq/ when carried: *.whl (cuequivariance, cuequivariance-torch, ...)
  # and *.tar.xz (the ops wheels unpacked, site-packages layout), into $WORK/py
  if ls .peers/cueq/*.whl >/dev/null 2>&1; then
    "$V" -m pip install -q --no-deps --no-index --target "$WORK/py" .peers/cueq/*.whl \
      || stamp "WARNING: pip install of .peers/cueq/*.whl failed"
  fi
  for archive in .peers/cueq/*.tar.xz; do
    [ -f "$archive" ] && { tar -xJf "$archive" -C "$WORK/py" || stamp "WARNING: $archive failed"; }
  done
}
gpu_tests() {  # gpu_tests <log name> <timeout s> <pytest args...>: this tree's tests with the
  # carried wheels (pytest travels in .whl/ when the image lacks it), log to $RES and $OUT
  local log=$1 limit=$2; shift 2
  PYTHONPATH="$WORK/py" "$V" -c "import pytest" 2>/dev/null \
    || { stamp "no pytest here: the tests did not run"; return 0; }
  PYTHONPATH="$(pwd):$WORK/py" timeout "$limit" "$V" -m pytest -q -p no:cacheprovider -W ignore \
    "$@" > "$RES/$log" 2>&1
  stamp "pytest $*: exit $? ($(tail -1 "$RES/$log"))"
  cp -f "$RES/$log" "$OUT/" 2>/dev/null
}

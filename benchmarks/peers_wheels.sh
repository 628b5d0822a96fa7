#!/usr/bin/env bash
# Download, here (with internet), every wheel the peers of `speed.py --peers` need on the GPU
# machine (Python 3.12, no internet), into the ignored folder .peers/<peer>/, and report the
# size the lead carries (.peers + .whl must stay under ~58 MiB together: one device call
# carries 64 MiB).
#
#   bash benchmarks/peers_wheels.sh            # DEST=.peers, scratch under $TMPDIR
#   PYVER=3.11 CUEQ_OPS=0 bash benchmarks/peers_wheels.sh   # for a CPU test of speed_gpu.sh
#
# The device image has torch 2.11 (with sympy, networkx, jinja2, fsspec, typing_extensions),
# e3nn 0.6 (scipy, opt_einsum, opt_einsum_fx), numpy and numba; ase and matscipy come from
# .whl/. What each peer needs besides, for the imports the benchmark makes, was found by
# installing each peer with `pip --target` on the CPU machine and importing it
# (benchmarks/peers/ runners): pandas and matplotlib, imported by mace's plotting CLI only,
# are left out (the runner puts a placeholder that raises on use).
# `.peers/common` holds wheels several peers share; the GPU script installs them into each
# peer's folder. The cuEquivariance ops wheels (45 + 29 MB) are unpacked and packed again
# with xz -9 into .peers/cueq/cueq-ops.tar.xz (~27 MB), to be unpacked into the peer's folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-.peers}
PY=${PYTHON:-python3}
PYVER=${PYVER:-3.12}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/peers_wheels.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export PIP_NO_CACHE_DIR=1

download() {  # download <peer> PKG==VER ...: cp312 / manylinux / pure-python wheels only
  local peer=$1; shift
  mkdir -p "$DEST/$peer"
  "$PY" -m pip download -q --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any --no-deps --ignore-requires-python \
    -d "$DEST/$peer" "$@"
}

build_wheel() {  # build_wheel <peer> PKG==VER: a pure-python sdist built here into a wheel
  local peer=$1; shift
  mkdir -p "$DEST/$peer"
  "$PY" -m pip wheel -q --no-deps -w "$DEST/$peer" "$@"
}

rm -rf "$DEST"
download common torchmetrics==1.9.0 lightning-utilities==0.15.3 h5py==3.16.0 \
  omegaconf==2.3.0 torch-ema==0.3 PyYAML==6.0.3 tqdm==4.67.1 packaging==25.0
build_wheel common antlr4-python3-runtime==4.9.3  # sdist only on PyPI
download mace mace-torch==0.3.16 e3nn==0.4.4 prettytable==3.18.0 wcwidth==0.2.13 \
  configargparse==1.9.0 lmdb==1.7.5 orjson==3.11.3
download cueq cuequivariance==0.13.0 cuequivariance-torch==0.13.0 platformdirs==4.4.0 \
  nvidia-ml-py==13.580.82
# pytorch-lightning and lmdb: nequip-train, which makes the package its AOTInductor rows
# compile on the device (benchmarks/peers/nequip_package.py)
download nequip nequip==0.19.1 lightning==2.6.6 hydra-core==1.3.2 requests==2.32.5 \
  urllib3==2.5.0 idna==3.10 certifi==2025.8.3 pytorch-lightning==2.6.6 lmdb==1.7.5
download schnetpack schnetpack==2.2.0 pytorch-lightning==2.6.6 vesin==0.6.2 dirsync==2.2.6 \
  fasteners==0.20
build_wheel schnetpack progressbar==2.5  # sdist only on PyPI

# cuEquivariance's CUDA ops: unpacked wheels (zips) packed again with xz -9
if [ "${CUEQ_OPS:-1}" = 1 ]; then
"$PY" -m pip download -q --only-binary=:all: --python-version "$PYVER" \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
  --no-deps -d "$SCRATCH/ops" cuequivariance-ops-torch-cu13==0.13.0 cuequivariance-ops-cu13==0.13.0
mkdir -p "$SCRATCH/unpacked"
for wheel in "$SCRATCH"/ops/*.whl; do
  "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$wheel" "$SCRATCH/unpacked"
done
XZ_OPT=-9 tar -C "$SCRATCH/unpacked" -cJf "$DEST/cueq/cueq-ops.tar.xz" .
fi

du -sh "$DEST"/*
peers_kib=$(du -sk "$DEST" | cut -f1)
whl_kib=$(du -sk .whl 2>/dev/null | cut -f1 || echo 0)
total_mib=$(( (peers_kib + ${whl_kib:-0}) / 1024 ))
echo "carry: $DEST ${peers_kib} KiB + .whl ${whl_kib:-0} KiB = ${total_mib} MiB (limit ~58 MiB)"
if (( total_mib > 58 )); then
  echo "too large to carry in one device call: drop a peer or a dependency" >&2
  exit 1
fi

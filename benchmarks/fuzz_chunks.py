"""Run the slow fuzz tests (tests/test_fuzz.py) in chunks, one process per seed, and keep count.

Each chunk is ``pytest -m slow tests/test_fuzz.py -k test_<target>_slow`` with its own
``GEOFF_FUZZ_SEED`` (fresh examples per seed), run at ``nice -n 5``; at most ``--jobs``
chunks run at a time. After each chunk one JSON line is appended to ``--out``:
``{"target", "seed", "cases", "counts": {outcome: n}, "rc", "wall_s", "finished"}``
(rc != 0: a check failed; its message is in ``"failure"``). ``--total`` prints the sum over
every line of the file, old lines (without ``"seed"``) included.

    python benchmarks/fuzz_chunks.py --target graph --seeds 11-14 --cases 500 --jobs 2
    python benchmarks/fuzz_chunks.py --total
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "reliability_fuzz_counts.jsonl"
TESTS = {"graph": "test_atoms_to_graph_slow", "calculator": "test_calculator_slow",
         "lammps": "test_lammps_slow"}
KEYS = {"graph": "atoms_to_graph", "calculator": "calculator", "lammps": "lammps"}


def parse_seeds(text: str) -> list[int]:
    """'11-14' -> [11, 12, 13, 14]; '3,5' -> [3, 5]."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def run_chunk(target: str, seed: int, cases: int, out: Path) -> dict:
    """One pytest process for one seed; returns the JSON row it appended to ``out``."""
    counts_file = out.with_name(f".fuzz_{target}_{seed}.{os.getpid()}.jsonl")
    counts_file.unlink(missing_ok=True)
    env = dict(os.environ, GEOFF_FUZZ_SEED=str(seed), GEOFF_FUZZ_EXAMPLES=str(cases),
               GEOFF_FUZZ_LAMMPS=str(cases), GEOFF_FUZZ_COUNTS=str(counts_file),
               OMP_NUM_THREADS="1")
    cmd = ["nice", "-n", "5", sys.executable, "-m", "pytest", "-q", "-x", "-m", "slow", "-p",
           "no:cacheprovider", str(ROOT / "tests" / "test_fuzz.py"), "-k", TESTS[target]]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    counts = Counter()
    if counts_file.exists():
        for line in counts_file.read_text().splitlines():
            counts.update(json.loads(line).get(KEYS[target], {}))
        counts_file.unlink()
    row = {"target": KEYS[target], "seed": seed, "cases": sum(counts.values()),
           "counts": dict(counts), "rc": proc.returncode, "wall_s": round(time.time() - t0),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if proc.returncode != 0:  # the first failing assertion, for the record
        lines = [x for x in proc.stdout.splitlines() if x.startswith("E ")]
        row["failure"] = "\n".join(lines[:6]) or proc.stdout[-1500:]
    with out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def totals(out: Path) -> dict[str, Counter]:
    """Outcome counts per target over every line of ``out`` (old and new formats)."""
    result: dict[str, Counter] = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        per_target = {row["target"]: row["counts"]} if "target" in row else row
        for target, counts in per_target.items():
            result.setdefault(target, Counter()).update(counts)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=sorted(TESTS))
    ap.add_argument("--seeds", help="e.g. 11-14 or 3,5")
    ap.add_argument("--cases", type=int, default=500, help="cases per chunk")
    ap.add_argument("--jobs", type=int, default=1, help="chunks at a time (at most 2 here)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--total", action="store_true", help="print the totals of --out and exit")
    args = ap.parse_args(argv)
    if args.total:
        grand = 0
        for target, counts in totals(args.out).items():
            n = sum(counts.values())
            grand += n
            print(f"{target}: {n} cases {dict(counts.most_common())}")
        print(f"total: {grand} cases")
        return 0
    if not (args.target and args.seeds):
        ap.error("--target and --seeds are needed (or --total)")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda s: run_chunk(args.target, s, args.cases, args.out),
                             parse_seeds(args.seeds)))
    return max(r["rc"] for r in rows)


if __name__ == "__main__":
    sys.exit(main())

"""Long NVE runs of the shipped Cu SchNet model, in LAMMPS and in `geoff md`, with the resident
memory of the process sampled over the run.

  python benchmarks/reliability_longrun.py --engine md --steps 100000 --out longrun/md
  python benchmarks/reliability_longrun.py --engine lammps --steps 100000 --out longrun/lammps
  python benchmarks/reliability_longrun.py --summary longrun/md longrun/lammps [--plot f.png]
      [--collect benchmarks/results/reliability_longrun]

Each run writes ``<out>/rss.csv`` (wall seconds, resident set size in MiB, every --every
seconds) and ``<out>/summary.json``: steps, wall time, energy drift (linear fit of the total
energy, meV/atom/ps) and the RSS over the second half of the run relative to its median
(the first half includes start-up: imports, model load, allocator warm-up).
Structure: fcc Cu, 2x2x2 cubic cells (32 atoms), 600 K Maxwell-Boltzmann start, dt 1 fs,
float64. CPU by default (CUDA_VISIBLE_DEVICES is emptied); ``--device cuda`` runs `geoff md`
on the GPU and also samples the process's GPU memory (nvidia-smi, MiB) into rss.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lammps_decks import FCC_CU_BOX  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "models" / "cu_schnet"
REPEAT = 2  # 2x2x2 cubic cells = 32 atoms (7.23 Å box > the 4.5 Å cutoff): the cheapest cell
DECK = FCC_CU_BOX + """\
pair_style geoff
pair_coeff * * {model} Cu
neighbor 1.0 bin
velocity all create 600.0 4928459 mom yes rot yes dist gaussian loop geom
fix nve all nve
timestep 0.001
thermo {every}
thermo_style custom step time temp pe ke etotal
thermo_modify norm no flush yes
run {steps}
"""


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident set size (MiB) of ``pid`` and its children (0 when gone). ``field="RssAnon"``
    counts anonymous memory only: what a leak grows. VmRSS also counts mapped library pages,
    which the kernel takes back under memory pressure (RSS then drops in steps)."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += float(line.split()[1]) / 1024.0
        except OSError:
            pass
    return total


def gpu_mib(pid: int) -> float:
    """GPU memory (MiB) nvidia-smi reports for ``pid`` (0 when none or no nvidia-smi)."""
    try:
        rows = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                               "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=20).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return 0.0
    return sum(float(r.split(",")[1]) for r in rows if r.split(",")[0].strip() == str(pid))


def command(engine: str, steps: int, out: Path, log_every: int, device: str = "cpu"):
    if engine == "md":
        import ase.build
        import ase.io

        structure = out / "cu108.extxyz"
        ase.io.write(structure, ase.build.bulk("Cu", "fcc", a=3.615, cubic=True)
                     .repeat(REPEAT))
        return [sys.executable, "-m", "geoff.cli", "md", f"{MODEL}.ckpt", str(structure),
                "--ensemble", "nve", "-T", "600", "--dt", "1", "--steps", str(steps),
                "--dtype", "float64", "--threads", "1", "--log-every", str(log_every),
                "--traj-every", str(steps), "--device", device, "--out", str(out / "run")]
    deck = out / "in.nve"
    deck.write_text(DECK.format(n=REPEAT, model=f"{MODEL}.pt", every=log_every, steps=steps))
    lmp = Path(sys.executable).with_name("lmp")
    return [str(lmp), "-in", str(deck), "-log", str(out / "log.lammps")]


def lammps_thermo(log: Path):
    """(time_ps, etotal_eV) of the thermo lines of a LAMMPS log."""
    t, e, cols = [], [], None
    for line in log.read_text().splitlines():
        words = line.split()
        if words[:2] == ["Step", "Time"]:
            cols = words
            continue
        if cols and len(words) == len(cols):
            try:
                row = [float(w) for w in words]
            except ValueError:
                cols = None
                continue
            t.append(row[cols.index("Time")])
            e.append(row[cols.index("TotEng")])
    return np.array(t), np.array(e)


def md_thermo(run: Path):
    with open(run / "thermo.csv") as fh:
        rows = list(csv.DictReader(fh))
    return (np.array([float(r["time_ps"]) for r in rows]),
            np.array([float(r["conserved"]) for r in rows]))


def drift(t, e, n_atoms):
    slope = np.polyfit(t, e, 1)[0] if len(t) > 2 else float("nan")
    return 1000.0 * slope / n_atoms


def run(engine: str, steps: int, out: Path, every: float, log_every: int,
        device: str = "cpu") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = command(engine, steps, out, log_every, device)
    t0 = time.time()
    with open(out / "stdout.txt", "w") as log, open(out / "rss.csv", "w", newline="") as fh, \
            open(out / "rss_anon.csv", "w", newline="") as fa:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
        w = csv.writer(fh)
        w.writerow(["wall_s", "rss_mib"] + (["gpu_mib"] if device != "cpu" else []))
        while proc.poll() is None:
            gpu = [f"{gpu_mib(proc.pid):.0f}"] if device != "cpu" else []
            w.writerow([f"{time.time() - t0:.1f}", f"{rss_mib(proc.pid):.2f}"] + gpu)
            fa.write(f"{time.time() - t0:.1f},{rss_mib(proc.pid, 'RssAnon'):.2f}\n")
            fa.flush()
            fh.flush()
            time.sleep(every)
    wall = time.time() - t0
    summary = {"engine": engine, "device": device, "steps": steps, "returncode": proc.returncode,
               "wall_s": wall, "command": " ".join(cmd)}
    summary.update(analyse(engine, out))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def analyse(engine: str, out: Path) -> dict:
    n_atoms = 4 * REPEAT**3
    t, e = md_thermo(out / "run") if engine == "md" else lammps_thermo(out / "log.lammps")
    rss = np.loadtxt(out / "rss.csv", delimiter=",", skiprows=1, ndmin=2)
    rss = rss[rss[:, 1] > 0]
    late = rss[len(rss) // 2:, 1] if len(rss) else np.array([np.nan])
    med = float(np.median(late))
    gpu = {}
    if rss.shape[1] > 2 and len(rss):
        g = rss[len(rss) // 2:, 2]
        gpu = {"gpu_median_mib": float(np.median(g)), "gpu_max_mib": float(rss[:, 2].max()),
               "gpu_second_half_range_mib": float(g.max() - g.min())}
    anon = {}
    if (out / "rss_anon.csv").exists():
        a = np.loadtxt(out / "rss_anon.csv", delimiter=",", skiprows=1, ndmin=2, usecols=(0, 1))
        a = a[a[:, 1] > 0]
        if len(a) > 3:
            half = a[len(a) // 2:, 1]
            m = float(np.median(half))
            anon = {"anon_samples": int(len(a)), "anon_median_mib": m,
                    "anon_second_half_min_rel": float(half.min() / m - 1.0),
                    "anon_second_half_max_rel": float(half.max() / m - 1.0)}
    return gpu | anon | {"n_atoms": n_atoms, "thermo_rows": int(len(t)), "simulated_ps": float(t[-1]) if len(t) else 0.0,
            "drift_meV_atom_ps": float(drift(t, e, n_atoms)),
            "etot_range_meV_atom": float(1000 * (e.max() - e.min()) / n_atoms) if len(e) else None,
            "rss_samples": int(len(rss)), "rss_median_mib": med,
            "rss_first_mib": float(rss[0, 1]) if len(rss) else None,
            "rss_max_mib": float(rss[:, 1].max()) if len(rss) else None,
            "rss_second_half_min_rel": float(late.min() / med - 1.0),
            "rss_second_half_max_rel": float(late.max() / med - 1.0)}


def plot(outs: list[Path], png: Path) -> None:
    """Resident memory (MiB) and total-energy deviation (meV/atom) over each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_e) = plt.subplots(2, 1, figsize=(7, 6))
    for out in outs:
        engine = "md" if (out / "run").exists() else "lammps"
        label = {"md": "geoff md (ASE)", "lammps": "LAMMPS pair_style geoff"}[engine]
        rss = np.loadtxt(out / "rss.csv", delimiter=",", skiprows=1, ndmin=2)
        rss = rss[rss[:, 1] > 0]
        ax_rss.plot(rss[:, 0] / 60.0, rss[:, 1], label=label)
        t, e = md_thermo(out / "run") if engine == "md" else lammps_thermo(out / "log.lammps")
        ax_e.plot(t, 1000.0 * (e - e[0]) / (4 * REPEAT**3), label=label, lw=0.6)
    ax_rss.set(xlabel="wall time (min)", ylabel="resident memory (MiB)", ylim=(0, None))
    ax_e.set(xlabel="simulated time (ps)", ylabel="E_tot - E_tot(0) (meV/atom)")
    for ax in (ax_rss, ax_e):
        ax.legend(fontsize=8)
    fig.suptitle("NVE, 32 Cu atoms, cu_schnet float64, dt 1 fs, CPU", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)


def collect(summary: dict, out: Path, dest: Path) -> None:
    """<engine>.summary.json, .rss.csv, .thermo (md: thermo.csv, LAMMPS: its log), .in.nve."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    engine = summary["engine"]
    (dest / f"{engine}.summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    files = {"rss.csv": "rss.csv", "rss_anon.csv": "rss_anon.csv", "in.nve": "in.nve"}
    files.update({"run/thermo.csv": "thermo.csv"} if engine == "md" else
                 {"log.lammps": "thermo.txt"})
    for src, name in files.items():
        if (out / src).exists():
            shutil.copyfile(out / src, dest / f"{engine}.{name}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=["md", "lammps"])
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--out", type=Path)
    p.add_argument("--every", type=float, default=10.0, help="RSS sample interval, s")
    p.add_argument("--log-every", type=int, default=100, help="thermo interval, steps")
    p.add_argument("--device", default="cpu", help="cpu or cuda (geoff md only)")
    p.add_argument("--summary", nargs="*", type=Path, help="re-analyse finished runs")
    p.add_argument("--plot", type=Path, help="with --summary: write this PNG (RSS, E_tot)")
    p.add_argument("--collect", type=Path, help="with --summary: copy each run's summary, "
                   "rss.csv, thermo and deck into this folder as <engine>.*")
    a = p.parse_args()
    if a.plot and a.summary:
        plot(a.summary, a.plot)
    if a.summary:
        for out in a.summary:
            s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() \
                else {"engine": "md" if (out / "run").exists() else "lammps", "finished": False}
            s.update(analyse(s["engine"], out))
            print(json.dumps(s, indent=1))
            if a.collect:
                collect(s, out, a.collect)
        return 0
    print(json.dumps(run(a.engine, a.steps, a.out, a.every, a.log_every, a.device), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

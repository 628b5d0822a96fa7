"""Measured symmetry errors of every registered model (and the sampled / frame variants).

For a rattled, sheared periodic Cu/Zr cell (32 atoms, cutoff 5 Å) and each model at its default
hyper-parameters (untrained, seeded, eval mode), in float32 and float64, under ``--transforms``
(default 100) random O(3) transforms (Haar, half of them reflections) plus a random
translation, applied to positions, periodic shifts and cell of the same graph:

* energy: max |E(g x) - E(x)| per atom (eV/atom) and relative to |E(x)|;
* forces: max |F(g x) - R F(x)| (eV/Å) and relative to max |F(x)|.

Then symgnn as a function of K (``--ks``, its evaluation set of K transforms), faenet's frame
variants (global, stochastic in training mode, plain PCA frames without the degeneracy gates),
and the same errors on a *perfect* FCC lattice, where PCA frames are degenerate.

    python benchmarks/symmetry.py [--models schnet faenet ...] [--transforms 100]
        [--ks 1 4 16 64] [--k-transforms 20] [--device cpu|cuda] [--threads 2]

Writes ``benchmarks/results/symmetry.md``. A model that fails is reported, not fatal.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

SPECIES = ["Cu", "Zr"]
CUTOFF = 5.0


def test_structure():
    """Rattled, sheared FCC Cu cell with two Zr (32 atoms, periodic, triclinic)."""
    from ase.build import bulk

    rng = np.random.default_rng(0)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    cell = atoms.cell.array.copy()
    cell[2] += [0.4, -0.3, 0.0]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.symbols[1] = "Zr"
    atoms.symbols[7] = "Zr"
    return atoms


def perfect_structure():
    from ase.build import bulk

    return bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)


def random_orthogonal(rng, reflect):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ np.diag([1.0, 1.0, -1.0])
    return q


def transformed_graph(graph, rot, shift):
    """x -> R x + t on positions; shifts and cell rotate (rows are vectors: v -> v R^T)."""
    out = dict(graph)
    device = graph["positions"].device
    r = torch.as_tensor(rot, dtype=torch.float64, device=device)
    out["positions"] = (graph["positions"] @ r.T
                        + torch.as_tensor(shift, dtype=torch.float64, device=device))
    out["shifts"] = graph["shifts"] @ r.T
    out["cell"] = graph["cell"] @ r.T
    return out


def cast(graph, dtype):
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in graph.items()}


def measure(model, atoms, dtype, n_transforms, seed=0, train=False, device="cpu"):
    """Symmetry errors of ``model`` on ``atoms`` in ``dtype`` (graph built in float64)."""
    from geoff.graph import atoms_to_graph

    model = model.to(device=device, dtype=dtype)
    model.train(train)
    graph = atoms_to_graph(atoms, model, dtype=torch.float64, device=device)

    def run(g):
        out = model(cast(g, dtype))
        return out["energy"].detach().double(), out["forces"].detach().double()

    torch.manual_seed(seed)
    e0, f0 = run(graph)
    rng = np.random.default_rng(seed)
    n = len(atoms)
    de, df = [], []
    for k in range(n_transforms):
        rot = random_orthogonal(rng, reflect=bool(k % 2))
        e, f = run(transformed_graph(graph, rot, rng.normal(size=3) * 2.0))
        de.append(abs(float(e[0] - e0[0])))
        df.append(float((f - f0 @ torch.as_tensor(rot, device=f0.device).T).abs().max()))
    fmax = float(f0.abs().max())
    return {"de_atom": max(de) / n, "de_rel": max(de) / abs(float(e0[0])),
            "de_rms_atom": float(np.sqrt(np.mean(np.square(de)))) / n,
            "df": max(df), "df_rel": max(df) / max(fmax, 1e-300), "fmax": fmax,
            "df_rms": float(np.sqrt(np.mean(np.square(df)))), "n_atoms": n,
            "de_list": de, "df_list": df,
            "finite": bool(torch.isfinite(f0).all())}


def build(name, **hparams):
    from geoff.potentials import build_model

    torch.manual_seed(0)
    return build_model(name, species=SPECIES, cutoff=CUTOFF, **hparams).eval()


def row(label, res32, res64, keys=("de_atom", "de_rel", "df", "df_rel")):
    def cells(r):
        if isinstance(r, str):
            return [r] * len(keys)
        return [f"{r[k]:.1e}" for k in keys]

    return "| " + " | ".join([label] + cells(res32) + cells(res64)) + " |"


K_KEYS = ("de_rms_atom", "de_atom", "df_rms", "df")
K_HEADER = ("| model | f32 rms dE/atom (eV) | f32 max dE/atom (eV) | f32 rms dF (eV/Å) | "
            "f32 max dF (eV/Å) | f64 rms dE/atom (eV) | f64 max dE/atom (eV) | "
            "f64 rms dF (eV/Å) | f64 max dF (eV/Å) |\n|---|---|---|---|---|---|---|---|---|")


HEADER = ("| model | f32 max dE/atom (eV) | f32 dE/E | f32 max dF (eV/Å) | f32 dF/max F | "
          "f64 max dE/atom (eV) | f64 dE/E | f64 max dF (eV/Å) | f64 dF/max F |\n"
          "|---|---|---|---|---|---|---|---|---|")


def safe(fn, label):
    try:
        return fn()
    except Exception as exc:  # a broken model is reported, not fatal
        traceback.print_exc()
        print(f"{label}: failed: {exc}", file=sys.stderr)
        return f"failed ({type(exc).__name__})"


DEVICE = "cpu"


def pooled(results):
    """Pool the per-transform errors of several measurements (e.g. several seeds)."""
    if any(isinstance(r, str) for r in results):
        return next(r for r in results if isinstance(r, str))
    de = [x for r in results for x in r["de_list"]]
    df = [x for r in results for x in r["df_list"]]
    n = results[0]["n_atoms"]
    return {"de_atom": max(de) / n, "de_rms_atom": float(np.sqrt(np.mean(np.square(de)))) / n,
            "df": max(df), "df_rms": float(np.sqrt(np.mean(np.square(df))))}


def k_row(label, k, n_seeds, atoms, n_transforms, train=False):
    """symgnn with K samples; evaluation sets of seeds 0..n_seeds-1 pooled."""
    t0 = time.perf_counter()
    res = []
    for d in (torch.float32, torch.float64):
        res.append(pooled([safe(lambda s=s, d=d: measure(
            build("symgnn", n_samples=k, seed=s), atoms, d, n_transforms, seed=s, train=train,
            device=DEVICE), label) for s in range(n_seeds)]))
    print(f"{label}: {res} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return row(label, *res, keys=K_KEYS)


def both_dtypes(label, make, atoms, n_transforms, train=False, keys=None):
    t0 = time.perf_counter()
    res = [safe(lambda d=d: measure(make(), atoms, d, n_transforms, train=train,
                                    device=DEVICE), label)
           for d in (torch.float32, torch.float64)]
    print(f"{label}: {res} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return row(label, *res) if keys is None else row(label, *res, keys=keys)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--transforms", type=int, default=100)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--k-transforms", type=int, default=100,
                        help="transforms per K in the symgnn sweep (K=64 costs 64 networks "
                        "per call: slow on a CPU, fine on a GPU)")
    parser.add_argument("--k-seeds", type=int, default=4,
                        help="evaluation sets (seeds) per K in the symgnn sweep, pooled")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (symmetry errors, not "
                        "timings: any device will do; float32 matmuls run without TF32)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "symmetry.md"))
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(args.threads)
    if DEVICE.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # full float32 precision
        torch.backends.cudnn.allow_tf32 = False
    from geoff.bench import device_name
    from geoff.potentials import available_models

    models = args.models or available_models()
    atoms, perfect = test_structure(), perfect_structure()
    n = args.transforms

    main_rows = [both_dtypes(name, lambda name=name: build(name), atoms, n) for name in models]

    variant_rows = []
    if "faenet" in available_models():
        for label, hp, train in [
            ("faenet frames=local (default)", {}, False),
            ("faenet frames=local, gap_scale=0 (plain PCA)", dict(gap_scale=0.0), False),
            ("faenet frames=local, group=SO3 (not reflection-invariant)", dict(group="SO3"),
             False),
            ("faenet frames=global", dict(frames="global"), False),
            ("faenet frames=global, gap_scale=0", dict(frames="global", gap_scale=0.0), False),
            ("faenet frames=stochastic, eval (= all frames)", dict(frames="stochastic"), False),
            ("faenet frames=stochastic, train (1 frame/call)", dict(frames="stochastic"), True),
        ]:
            variant_rows.append(both_dtypes(label, lambda hp=hp: build("faenet", **hp), atoms,
                                            n, train=train))
    k_rows = []
    if "symgnn" in available_models():
        for k in args.ks:
            k_rows.append(k_row(f"symgnn K={k}, eval (fixed set)", k, args.k_seeds, atoms,
                                args.k_transforms))
        k_train = 4 if 4 in args.ks else args.ks[0]
        k_rows.append(k_row(f"symgnn K={k_train}, train (fresh each call)", k_train,
                            args.k_seeds, atoms, args.k_transforms, train=True))
    perfect_rows = []
    for label, name, hp in [("schnet (reference)", "schnet", {}),
                            ("faenet local (gated)", "faenet", {}),
                            ("faenet local, gap_scale=0", "faenet", dict(gap_scale=0.0)),
                            ("faenet global (gated)", "faenet", dict(frames="global")),
                            ("faenet global, gap_scale=0", "faenet",
                             dict(frames="global", gap_scale=0.0))]:
        if name in available_models():
            perfect_rows.append(both_dtypes(label, lambda name=name, hp=hp: build(name, **hp),
                                            perfect, n))

    text = (
        "# Symmetry errors, measured\n\n"
        f"Rattled (0.1 Å), sheared periodic FCC Cu cell with 2 Zr, 32 atoms, cutoff {CUTOFF} Å; "
        "each model at its default hyper-parameters, untrained (seed 0, zero energy shift, unit "
        f"scale), eval mode unless noted. {n} random O(3) transforms (Haar; every second one a "
        "reflection) plus a random translation, applied to positions, periodic shifts and cell "
        "of the same graph (the graph is built and transformed in float64, then cast). "
        "dE: |E(gx) - E(x)|, max over transforms, per atom and relative to |E(x)|; "
        "dF: max |F(gx) - R F(x)| over atoms, components and transforms, absolute and relative "
        "to max |F(x)|. Forces conservative (-dE/dx).\n"
        f"Device: {device_name(DEVICE)}, torch {torch.__version__}. "
        "Generated by `python benchmarks/symmetry.py` (see its docstring for the options).\n\n"
        "## Every registered model\n\n" + HEADER + "\n" + "\n".join(main_rows) + "\n")
    if variant_rows:
        text += ("\n## faenet frame variants\n\n"
                 "Exact variants are at round-off. `stochastic, train` is one random PCA frame "
                 "per call: its error is the spread of the per-frame energies. Global frames are "
                 "exact here but not local (see `geoff/potentials/faenet.py`).\n\n"
                 + HEADER + "\n" + "\n".join(variant_rows) + "\n")
    if k_rows:
        text += ("\n## symgnn: error against the number K of sampled transforms\n\n"
                 "At inference the K transforms are a fixed seeded set, so the energy is "
                 "deterministic and conservative but only approximately invariant; the error "
                 "falls like 1/sqrt(K) (Monte Carlo estimate of the group average). In training "
                 "mode every call draws fresh transforms (also the reference call). "
                 f"{args.k_transforms} transforms for each of {args.k_seeds} evaluation sets "
                 "(seeds) per row, pooled: the error of one fixed set fluctuates from set to "
                 "set; rms and max over transforms and sets (dF: the max over atoms and "
                 "components of each transform's error). The symgnn row "
                 "of the first table is the registry default, K = 8.\n\n"
                 + K_HEADER + "\n" + "\n".join(k_rows) + "\n")
    if perfect_rows:
        text += ("\n## Perfect FCC lattice (degenerate PCA frames)\n\n"
                 "Perfect FCC Cu, cubic 2x2x2 cell (32 atoms, a = 3.61 Å): every local "
                 "covariance is isotropic. With the degeneracy gates (default `gap_scale`) the "
                 "frame coordinates are switched off there: exact invariance and zero forces, "
                 "like an invariant model. Without them (`gap_scale=0`, plain PCA frames) the "
                 "frame is whatever the eigensolver returns for a degenerate matrix: forces stay "
                 "finite (stable eigh derivative) but are spurious and the energy is not invariant "
                 "(and it jumps at the lattice point; see tests/test_frames.py). Relative force "
                 "errors are relative to max |F|, which is zero up to round-off on a perfect "
                 "lattice: read the absolute column.\n\n"
                 + HEADER + "\n" + "\n".join(perfect_rows) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

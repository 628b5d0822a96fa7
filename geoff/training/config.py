"""Training configuration: one table of options, read from YAML and from the command line.

Every option is a YAML key (``batch_size: 8``) and a flag (``--batch-size 8``); flags given on
the command line override the YAML file, which overrides the defaults. ``OPTIONS`` is the
single source of names, defaults, units and help texts (``geoff train --help`` prints them).
"""
from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    help: str
    group: str
    kind: str = "value"  # value | list | mapping | flag | bool | optional_path
    type: Any = None  # int, float, str, or None (YAML-parsed)
    choices: Optional[tuple] = None
    metavar: Optional[str] = None


_D, _M, _N, _L, _O, _C, _R = ("data", "model", "normalisation", "loss", "optimisation",
                              "checkpoints and output", "runtime")

OPTIONS: List[Option] = [
    # data
    Option("data", None, "extxyz (or any ASE-readable) file of labelled structures: energy (eV), "
           "forces (eV/Å), stress (eV/Å³), per-atom energies (eV); any label may be missing. "
           "Required.", _D, type=str, metavar="FILE"),
    Option("val_data", None, "separate validation file; when given, val_fraction is not used "
           "(default: a random val_fraction of --data)", _D, type=str, metavar="FILE"),
    Option("test_data", None, "separate test file; when given, test_fraction is not used "
           "(default: a random test_fraction of --data)", _D, type=str, metavar="FILE"),
    Option("target", None, "a per-atom property to learn beside (or, with energy_weight and "
           "forces_weight 0, instead of) the energy: the name of a per-atom array of the data "
           "(NaN = unlabelled atom), e.g. barrier_mean; the model gets a property head of that "
           "name with per-element normalisation. Splits are by structure, so test atoms never "
           "share a structure with training atoms", _D, type=str, metavar="NAME"),
    Option("val_fraction", 0.1, "fraction of --data held out for validation (early stopping, "
           "best checkpoint, plateau decay)", _D, type=float),
    Option("test_fraction", 0.1, "fraction of --data held out for the final test metrics",
           _D, type=float),
    Option("splits_from", None, "reuse the split_{train,val,test}.txt index files of an earlier "
           "run in this folder instead of drawing a new split", _D, type=str, metavar="DIR"),
    # model
    Option("model", "schnet", "architecture name (see geoff.potentials.available_models())",
           _M, type=str, metavar="NAME"),
    Option("species", None, "element symbols the model knows, e.g. Cu Zr (default: the elements "
           "in the data, by atomic number)", _M, kind="list", type=str),
    Option("cutoff", 5.0, "neighbour cutoff radius, Å", _M, type=float),
    Option("force_head", "conservative", "forces as -dE/dx ('conservative'), from a learned "
           "vector head ('direct'), or both (conservative 'forces' plus 'direct_forces')",
           _M, type=str, choices=("conservative", "direct", "both")),
    Option("hparams", {}, "architecture hyper-parameters as KEY=VALUE pairs, e.g. n_features=64 "
           "n_layers=3 n_rbf=32 (YAML: a mapping)", _M, kind="mapping"),
    # normalisation
    Option("atomic_energies", "fit", "per-element reference energies: 'fit' (least squares "
           "E ≈ Σ count·e_s on the training set), 'zero', or SYMBOL=eV pairs such as Cu=-3.7",
           _N, kind="mapping"),
    Option("energy_scale", "auto", "scale of the per-atom energy head, eV: 'auto' (RMS of the "
           "training force components, or of the per-atom residual energy without forces) or a "
           "number", _N),
    # loss
    Option("energy_weight", 100.0, "weight of the energy-per-atom loss (residual in eV/atom)",
           _L, type=float),
    Option("forces_weight", 10.0, "weight of the force loss (residual per component, eV/Å)",
           _L, type=float),
    Option("direct_forces_weight", 1.0, "force_head=both only: weight of the loss on the "
           "direct head's forces (eV/Å)", _L, type=float),
    Option("stress_weight", 0.0, "weight of the stress loss (9 components, eV/Å³); costs a "
           "strain derivative per step", _L, type=float),
    Option("energies_weight", 0.0, "weight of the per-atom energy loss (eV), for data that has "
           "per-atom energies", _L, type=float),
    Option("target_weight", 1.0, "weight of the per-atom target loss (in the target's unit)",
           _L, type=float),
    Option("loss", "mse", "penalty on residuals: 'mse' (r²) or 'huber' (r²/2 up to "
           "huber_delta, linear beyond)", _L, type=str, choices=("mse", "huber")),
    Option("huber_delta", 0.01, "Huber transition, in the unit of each residual (eV/atom, eV/Å, "
           "eV/Å³, eV)", _L, type=float),
    # optimisation
    Option("epochs", 100, "passes over the training set", _O, type=int),
    Option("max_steps", 0, "stop after this many optimizer steps in total (0: no limit)",
           _O, type=int),
    Option("max_time", 0.0, "stop after this many minutes, wall clock from the start (0: no "
           "limit); the checkpoints and test metrics are still written", _O, type=float),
    Option("batch_size", 4, "structures per optimizer step, summed over all processes/GPUs",
           _O, type=int),
    Option("val_batch_size", 32, "structures per batch when evaluating", _O, type=int),
    Option("lr", 2e-3, "peak learning rate of AdamW", _O, type=float),
    Option("weight_decay", 0.0, "AdamW decoupled weight decay", _O, type=float),
    Option("warmup_steps", 50, "linear learning-rate warm-up, optimizer steps (0: none)",
           _O, type=int),
    Option("scheduler", "plateau", "learning-rate decay after warm-up: 'plateau' (multiply by "
           "plateau_factor when the validation loss stalls), 'cosine' (to min_lr at the last "
           "epoch) or 'constant'", _O, type=str, choices=("plateau", "cosine", "constant")),
    Option("plateau_factor", 0.5, "plateau: factor applied to the learning rate", _O, type=float),
    Option("plateau_patience", 5, "plateau: epochs without improvement before decaying",
           _O, type=int),
    Option("min_lr", 1e-5, "floor of the learning rate for plateau and cosine", _O, type=float),
    Option("grad_clip", 10.0, "clip the global gradient norm to this value (0: off)",
           _O, type=float),
    Option("ema_decay", 0.99, "exponential moving average of the weights, used for validation, "
           "checkpoints and testing (0: off)", _O, type=float),
    Option("early_stopping", 30, "stop after this many validations without improvement "
           "(0: off)", _O, type=int),
    Option("val_every", 1, "validate every this many epochs", _O, type=int),
    # checkpoints and output
    Option("out", "runs/geoff", "output folder: best.ckpt, last.ckpt, metrics.csv, "
           "learning_curve.png, test_metrics.{csv,json}, split_*.txt, config.yaml, train.log",
           _C, type=str, metavar="DIR"),
    Option("checkpoint_every", 200, "also write last.ckpt every this many optimizer steps "
           "(0: only at the end of each epoch)", _C, type=int),
    Option("resume", False, "continue the run in --out from last.ckpt (or from the checkpoint "
           "PATH given) exactly: weights, optimizer, scheduler, EMA, RNG, data order, step",
           _C, kind="optional_path"),
    Option("overwrite", False, "start afresh even if --out already holds a run (its checkpoints "
           "and metrics are replaced)", _C, kind="bool"),
    # runtime
    Option("seed", 0, "random seed: split, initial weights, data order", _R, type=int),
    Option("device", "auto", "'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'",
           _R, type=str, metavar="DEVICE"),
    Option("dtype", "float32", "training precision", _R, type=str,
           choices=("float32", "float64")),
    Option("eval_dtype", "float64", "precision of the final test evaluation", _R, type=str,
           choices=("float32", "float64")),
    Option("num_threads", 0, "CPU threads per process (0: cores / processes)", _R, type=int),
    Option("deterministic", False, "torch.use_deterministic_algorithms (bitwise-reproducible "
           "GPU runs, slower; CPU runs are reproducible anyway)", _R, kind="bool"),
    Option("progress", True, "show a progress bar with loss and ETA", _R, kind="bool"),
]

BY_NAME = {o.name: o for o in OPTIONS}
# Options that may change when a run is resumed (they do not alter the computation so far).
RESUMABLE_CHANGES = {"epochs", "max_steps", "max_time", "checkpoint_every", "resume",
                     "progress", "num_threads", "early_stopping", "device", "out",
                     "eval_dtype", "val_batch_size", "test_data", "overwrite"}


def defaults() -> Dict[str, Any]:
    return {o.name: (dict(o.default) if isinstance(o.default, dict) else o.default)
            for o in OPTIONS}


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, list(BY_NAME), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_scalar(text: str):
    value = yaml.safe_load(text)
    return text if value is None else value


def _coerce(opt: Option, value):
    if value is None:
        return None
    if opt.kind == "mapping":
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)):  # KEY=VALUE pairs from the command line
            out = {}
            for item in value:
                if "=" not in item:
                    if len(value) == 1:
                        return item  # a single word: 'fit', 'zero'
                    raise ValueError(f"--{opt.name.replace('_', '-')}: expected KEY=VALUE, got {item!r}")
                k, v = item.split("=", 1)
                out[k.strip()] = _parse_scalar(v)
            return out
        if not isinstance(value, dict):
            raise ValueError(f"{opt.name} must be a mapping, got {value!r}")
        return dict(value)
    if opt.kind == "list":
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        return [opt.type(v) if opt.type else v for v in value]
    if opt.kind == "bool":
        if isinstance(value, str):
            value = _parse_scalar(value)
        if not isinstance(value, bool):
            raise ValueError(f"{opt.name} must be true or false, got {value!r}")
        return value
    if opt.kind == "optional_path":
        if isinstance(value, bool) or value in ("true", "false"):
            return value if isinstance(value, bool) else value == "true"
        return str(value)
    if opt.type is None:
        return _parse_scalar(value) if isinstance(value, str) else value
    try:
        if opt.type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        value = opt.type(value)
    except (TypeError, ValueError):
        raise ValueError(f"{opt.name} must be {opt.type.__name__}, got {value!r}") from None
    if opt.choices and value not in opt.choices:
        raise ValueError(f"{opt.name} must be one of {list(opt.choices)}, got {value!r}")
    return value


def read_yaml(path) -> Dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no config file at {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a YAML mapping of options")
    return raw


def make_config(source=None, **overrides) -> Dict[str, Any]:
    """Defaults < ``source`` (a dict or a YAML path) < ``overrides``; checked and coerced."""
    raw: Dict[str, Any] = {}
    if source is not None:
        raw.update(read_yaml(source) if isinstance(source, (str, Path)) else dict(source))
    raw.update(overrides)
    raw = {k.replace("-", "_"): v for k, v in raw.items()}
    cfg = defaults()
    for key, value in raw.items():
        if key not in BY_NAME:
            raise ValueError(f"unknown training option {key!r}{_suggest(key)}; "
                             "see `geoff train --help`")
        cfg[key] = _coerce(BY_NAME[key], value)
    saved = Path(cfg["out"]) / "config.yaml"
    if cfg["resume"] and not cfg["data"] and source is None and saved.exists():
        # `geoff train --resume --out runs/cu`: the run's own options, plus what was given.
        return make_config(saved, **overrides)
    check(cfg)
    return cfg


def check(cfg: Dict[str, Any]) -> None:
    if not cfg.get("data"):
        raise ValueError("no training data: give --data FILE.extxyz (or `data:` in the YAML)")
    positive = ("epochs", "batch_size", "val_batch_size", "val_every")
    for key in positive:
        if cfg[key] < 1:
            raise ValueError(f"{key} must be at least 1, got {cfg[key]}")
    for key in ("max_steps", "max_time", "weight_decay", "warmup_steps", "grad_clip",
                "checkpoint_every", "early_stopping", "num_threads", "energy_weight",
                "forces_weight", "direct_forces_weight", "stress_weight", "energies_weight",
                "target_weight"):
        if cfg[key] < 0:
            raise ValueError(f"{key} must not be negative, got {cfg[key]}")
    if not cfg["lr"] > 0 or cfg["min_lr"] < 0:
        raise ValueError(f"need lr > 0 and min_lr >= 0, got lr={cfg['lr']}, min_lr={cfg['min_lr']}")
    if not 0.0 <= cfg["ema_decay"] < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {cfg['ema_decay']}")
    if not 0.0 < cfg["plateau_factor"] < 1.0:
        raise ValueError(f"plateau_factor must be in (0, 1), got {cfg['plateau_factor']}")
    if not cfg["cutoff"] > 0:
        raise ValueError(f"cutoff must be a positive number of Å, got {cfg['cutoff']}")


def to_yaml(cfg: Dict[str, Any]) -> str:
    body = {k: cfg[k] for k in BY_NAME if k != "resume"}
    return yaml.safe_dump(json.loads(json.dumps(body)), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# argparse

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option (default SUPPRESS, so only flags the user typed override YAML)."""
    parser.add_argument("--config", metavar="YAML", default=argparse.SUPPRESS,
                        help="YAML file of options (keys are the option names below with "
                        "underscores); flags given here override it")
    groups = {}
    for opt in OPTIONS:
        group = groups.get(opt.group) or parser.add_argument_group(opt.group)
        groups[opt.group] = group
        flag = "--" + opt.name.replace("_", "-")
        default = opt.default
        if isinstance(default, dict):
            default = " ".join(f"{k}={v}" for k, v in default.items()) or "none"
        text = f"{opt.help} [default: {default}]"
        text = text.replace("%", "%%")
        kw = dict(dest=opt.name, default=argparse.SUPPRESS, help=text)
        if opt.kind == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif opt.kind == "optional_path":
            group.add_argument(flag, nargs="?", const=True, metavar="PATH", **kw)
        elif opt.kind in ("list", "mapping"):
            group.add_argument(flag, nargs="+", metavar="KEY=VALUE" if opt.kind == "mapping"
                               else "SYMBOL", **kw)
        else:
            metavar = opt.metavar or ("{" + ",".join(opt.choices) + "}" if opt.choices else
                                      (opt.type.__name__.upper() if opt.type else "VALUE"))
            group.add_argument(flag, metavar=metavar, **kw)


def from_args(args: argparse.Namespace) -> Dict[str, Any]:
    given = {o.name: getattr(args, o.name) for o in OPTIONS if hasattr(args, o.name)}
    return make_config(getattr(args, "config", None), **given)

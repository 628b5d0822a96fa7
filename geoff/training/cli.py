r"""Train a geoff model on labelled structures (extxyz).

  geoff train --config cfg.yaml
  geoff train --data cu.extxyz --model schnet --epochs 50 --out runs/cu \
      --hparams n_features=64 n_layers=3 --cutoff 5.0
  geoff train --resume --out runs/cu               # continue runs/cu exactly (its config.yaml)
  geoff train --resume --out runs/cu --epochs 80   # ... and train longer
  torchrun --nproc_per_node 2 -m geoff.cli train --config cfg.yaml   # data parallel

Every option below is also a YAML key (underscores instead of dashes); flags override the
file. Units: energies eV, forces eV/Å, stresses eV/Å³, lengths Å, times minutes.
Output (in --out): best.ckpt (EMA weights at the best validation loss), last.ckpt (for
--resume), metrics.csv, learning_curve.png, test_metrics.{json,csv} (float64),
summary.json (epochs, time, parameters, device), split_{train,val,test}.txt, config.yaml,
train.log.
"""
from __future__ import annotations

import argparse

from . import config as cfg_mod


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg_mod.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .trainer import Trainer

    cfg = cfg_mod.from_args(args)
    result = Trainer(cfg).run()
    return 0 if result is not None else 1

"""Training: datasets (extxyz -> cached graphs), normalisation, losses, the trainer.

    from geoff.training import train
    result = train("cfg.yaml")            # or a dict of options, or keyword options
    result["test_metrics"]["forces_mae_meV_A"], result["best_checkpoint"]
"""
from .config import make_config
from .dataset import GraphDataset, GraphLoader, make_split, read_split
from .losses import Loss
from .normalisation import fit_atomic_energies, normalisation
from .evaluation import evaluate
from .trainer import StopTraining, Trainer, train

__all__ = ["train", "Trainer", "StopTraining", "make_config", "GraphDataset", "GraphLoader",
           "make_split", "read_split", "Loss", "fit_atomic_energies", "normalisation", "evaluate"]

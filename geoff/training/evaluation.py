"""Evaluating a model on a dataset: summed residual statistics, and the test metrics from them."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..inference import dtype_name
from .dataset import GraphDataset, GraphLoader
from .distributed import all_reduce_sums
from .losses import STAT_KEYS, Loss, metric_column, metrics_from_sums


def evaluate(model, dataset: GraphDataset, loss: Loss, batch_size: int,
             compute_stress: bool, rank: int = 0, world_size: int = 1) -> Dict[str, float]:
    """Summed residual statistics of ``model`` on ``dataset`` (this rank's shard, all-reduced).

    The model is evaluated in eval mode (forces by autograd, no graph kept for training).
    """
    was_training = model.training
    model.eval()
    indices = np.arange(len(dataset))[rank::world_size]
    sums = {k: 0.0 for k in STAT_KEYS}
    acc = None
    counts = dataset.label_counts()
    loader = GraphLoader(dataset, indices, batch_size) if len(indices) else []
    for batch, _ in loader:
        out = model(batch, compute_stress=compute_stress)
        out = {k: v.detach() for k, v in out.items()}
        _, stats = loss(out, batch, counts)
        acc = stats if acc is None else {k: acc[k] + stats[k] for k in acc}
    if acc is not None:
        for k, v in acc.items():
            sums[k] = float(v)
    model.train(was_training)
    return all_reduce_sums(sums, world_size, device=dataset[0]["positions"].device)


def test_metrics(sums: Dict[str, float], data: GraphDataset, dtype, checkpoint) -> Dict[str, Any]:
    """The contents of test_metrics.json: set size, precision, checkpoint, MAE/RMSE with units."""
    metrics: Dict[str, Any] = {"n_structures": len(data), "n_atoms": int(data.n_atoms.sum()),
                               "dtype": dtype_name(dtype), "checkpoint": str(checkpoint)}
    for key, value in metrics_from_sums(sums).items():
        metrics[metric_column(key)] = value
    return metrics


"""The study's ``md: {cuda_graphs: ...}`` reaches ``BatchedForces`` (checked with fakes on the
CPU): passed on to ``BatchedForces``, and never handed to ``MDSettings`` (which has no such
field)."""
import csv

import numpy as np
import pytest
from ase.build import molecule

from conftest import small_model, tiny_cu_study
from geoff.md import FailureCriteria, MDSettings
from geoff.md.replica_forces import BatchedForces
from geoff.md.replicas import batched_forces
from geoff.md.study_config import batch_options, load_config, run_settings

pytestmark = pytest.mark.usefixtures("one_thread")

NO_CHECKS = FailureCriteria(max_force=None, temperature_factor=None, min_distance_factor=None,
                            min_distance=0.0, check_bonds=False)


class WithGraphs(BatchedForces):
    """A ``BatchedForces`` that takes ``cuda_graphs`` (what helper cudagraph adds) and
    records what it was given; it computes eagerly."""

    seen = []

    def __init__(self, *args, cuda_graphs=False, **kwargs):
        WithGraphs.seen.append(cuda_graphs)
        super().__init__(*args, **kwargs)


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.cell = np.zeros((3, 3))
    return atoms


@pytest.fixture(scope="module")
def model():
    return small_model("schnet", species=("C", "H", "O"), cutoff=4.0)


def test_batched_forces_passes_the_keyword_when_it_exists(model, monkeypatch):
    import geoff.md.replicas as R

    WithGraphs.seen = []
    monkeypatch.setattr(R, "BatchedForces", WithGraphs)
    s = MDSettings(steps=2, failure=NO_CHECKS)
    batched_forces(model, ethanol(), s, "auto")
    batched_forces(model, ethanol(), s, True)
    batched_forces(model, ethanol(), s, False)  # eager, asked for
    assert WithGraphs.seen == ["auto", True, False]


def test_study_md_key_reaches_batched_forces(tmp_path, monkeypatch):
    """``md: {cuda_graphs: auto}`` in a study with ``replicas: true``: the study runs (the key
    is not an ``MDSettings`` field) and its batched runs ask ``BatchedForces`` for graphs."""
    import geoff.md.replicas as R
    from geoff.checkpoint import save
    from geoff.md.study import run_study

    save(small_model("schnet"), tmp_path / "cons.ckpt")
    config = tiny_cu_study(
        "tiny-graphs", [{"name": "cons", "checkpoint": str(tmp_path / "cons.ckpt")}],
        [{"name": "nvt", "ensemble": "bussi", "temperature_K": 400, "tau_fs": 10,
          "time_ps": 0.004}], replicas=True,
        md={"log_every": 2, "traj_every": 2, "cuda_graphs": "auto"})
    cfg = load_config(config)
    assert batch_options(cfg) == {"cuda_graphs": "auto"}
    settings = run_settings(cfg, cfg.models[0], cfg.ensembles[0], 1.0, 0)
    assert settings.log_every == 2 and "cuda_graphs" not in settings.to_dict()

    WithGraphs.seen = []
    monkeypatch.setattr(R, "BatchedForces", WithGraphs)
    run_study(config, output=tmp_path / "out", progress=False)
    assert WithGraphs.seen == ["auto"]  # one batched run for both seeds
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["seed"], r["status"], r["steps_done"]) for r in rows] == \
        [("0", "ok", "4"), ("1", "ok", "4")]

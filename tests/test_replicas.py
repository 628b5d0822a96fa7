"""Batched replicas (float64): R replicas in one graph equal R single-replica runs of the
existing ASE path (``run_md``) with the same seeds, to 1e-10 in positions and energies; a
replica that fails stops alone, with its step and reason."""
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from conftest import small_model, tiny_cu_study
from geoff.md import FailureCriteria, MDSettings, run_md
from geoff.md.replica_forces import BatchedForces
from geoff.md.replicas import replica_steps_per_s, run_replicas

pytestmark = pytest.mark.usefixtures("one_thread")

# min_distance=0: no distance check at all (also not the 0.5 Å overlap floor, nor the
# calculator's overlap check, which the untrained ethanol model would trip near step 30).
NO_CHECKS = FailureCriteria(max_force=None, temperature_factor=None, min_distance_factor=None,
                            min_distance=0.0,
                            check_bonds=False)
TOL = 1e-10


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.cell = np.zeros((3, 3))
    return atoms


def cuzr():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    symbols = atoms.get_chemical_symbols()
    for k in (0, 9, 18, 27):
        symbols[k] = "Zr"
    atoms.set_chemical_symbols(symbols)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture(scope="module")
def mol_model():
    return small_model("schnet", species=("C", "H", "O"), cutoff=4.0)


def assert_same(single, batched):
    """Positions of every written frame, and the thermo log, agree to TOL."""
    assert batched.steps_done == single.steps_done
    assert len(batched.frames) == len(single.frames) > 1
    for a, b in zip(single.frames, batched.frames):
        assert a.info["step"] == b.info["step"]
        np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=TOL)
    for key in ("epot", "ekin", "conserved", "temperature"):
        np.testing.assert_allclose(batched.thermo[key], single.thermo[key], rtol=TOL,
                                   atol=TOL, err_msg=key)


@pytest.mark.parametrize("ensemble", ["nve", "langevin", "bussi", "nose-hoover"])
def test_replicas_equal_single_runs_molecule(mol_model, ensemble):
    s = MDSettings(ensemble=ensemble, temperature_K=500.0, timestep_fs=0.5, steps=40,
                   seed=3, tau_fs=20.0, log_every=2, traj_every=5, failure=NO_CHECKS)
    batched = run_replicas(mol_model, ethanol(), s, replicas=3)
    assert [r.settings["seed"] for r in batched] == [3, 4, 5]
    for r, res in enumerate(batched):
        single = run_md(mol_model, ethanol(), s, seed=3 + r)
        assert_same(single, res)
    # different seeds are different trajectories
    assert np.abs(batched[0].frames[-1].positions - batched[1].frames[-1].positions).max() > 1e-3


@pytest.mark.parametrize("cutoff", [3.0, 4.0])  # 3 Å: edges on the device; 4 Å: matscipy
def test_replicas_equal_single_runs_periodic(cutoff):
    model = small_model("schnet", cutoff=cutoff)
    assert BatchedForces(model, cuzr()).on_device == (cutoff == 3.0)
    s = MDSettings(ensemble="langevin", timestep_fs=1.0, steps=20, seed=0, tau_fs=50.0,
                   log_every=2, traj_every=5, failure=NO_CHECKS)
    batched = run_replicas(model, cuzr(), s, temperatures=[300.0, 900.0])
    assert [r.settings["seed"] for r in batched] == [0, 1]
    for r, (res, t) in enumerate(zip(batched, (300.0, 900.0))):
        assert_same(run_md(model, cuzr(), s, temperature_K=t, seed=r), res)


def test_batched_forces_equal_the_calculator(mol_model):
    atoms = ethanol()
    pos = np.stack([atoms.positions + 0.05 * k for k in range(3)])
    pos[1, 0] += 0.1
    assert_equal_to_the_calculator(mol_model, atoms, pos, BatchedForces(mol_model, atoms)(pos),
                                   1e-12)


def assert_equal_to_the_calculator(model, atoms, pos, batched, tol):
    """``batched`` (energy (k,), forces (k, N, 3)) of positions ``pos`` equal, replica by
    replica, the float64 ``GeoffCalculator`` on ``atoms`` moved there."""
    from geoff.calculators import GeoffCalculator

    energy, forces = batched
    calc = GeoffCalculator(model, dtype="float64")
    for k in range(len(pos)):
        a = atoms.copy()
        a.positions = pos[k]
        a.calc = calc
        assert abs(a.get_potential_energy() - energy[k]) < tol
        np.testing.assert_allclose(forces[k], a.get_forces(), atol=tol)


def test_triclinic_replicas_build_their_edges_on_the_device_and_equal_the_calculator():
    """A triclinic periodic cell two cutoffs high: all pairs under the minimum image
    (``geoff.neighbours.all_pairs``), no per-replica matscipy call."""
    from ase import Atoms

    model = small_model("schnet", cutoff=3.0)
    cell = np.array([[7.0, 0.0, 0.0], [2.0, 6.8, 0.0], [-1.0, 1.5, 7.2]])
    rng = np.random.default_rng(8)
    atoms = Atoms("Cu16", cell=cell, pbc=True,
                  scaled_positions=(np.indices((2, 2, 4)).reshape(3, -1).T + 0.25) / [2, 2, 4])
    atoms.rattle(0.1, seed=1)
    batched = BatchedForces(model, atoms, dtype="float64")
    assert batched.on_device
    batched._edges_on_cpu = lambda *a: pytest.fail("matscipy per replica")
    pos = np.stack([atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
                    for _ in range(3)])
    pos[2] += cell[0]  # a replica translated by a cell vector: the same energy
    assert_equal_to_the_calculator(model, atoms, pos, batched(pos), 1e-10)


def test_batched_forces_run_the_model_the_calculator_runs():
    """float32 SchNet on the CPU: radial tables and edge pairs by default, as in
    ``GeoffCalculator`` (so a batch is not slower per replica for want of them); off when
    asked; the same numbers as the calculator's float32 call."""
    from geoff.calculators import GeoffCalculator

    model = small_model("schnet", cutoff=3.0)
    atoms = cuzr()
    auto = BatchedForces(model, atoms, dtype="float32")
    calc = GeoffCalculator(model, dtype="float32")
    assert (auto.radial_table, auto.edge_pairs) == (calc.radial_table, calc.edge_pairs) \
        == (True, True)
    assert "edge_pair" in auto.graph(atoms.positions[None])
    plain = BatchedForces(model, atoms, dtype="float32", radial_table=False, edge_pairs=False)
    assert not plain.radial_table and "edge_pair" not in plain.graph(atoms.positions[None])
    energy, forces = auto(atoms.positions[None])
    a = atoms.copy()
    a.calc = calc
    assert abs(a.get_potential_energy() - energy[0]) < 1e-4 * len(a)
    np.testing.assert_allclose(forces[0], a.get_forces(), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mace_replicas_on_cuda_take_the_calculators_tables():
    """float32 MACE-style on CUDA: radial tables by default in both paths, same numbers."""
    from geoff.calculators import GeoffCalculator

    model = small_model("mace", cutoff=3.0)
    atoms = cuzr()
    batched = BatchedForces(model, atoms, device="cuda", dtype="float32")
    calc = GeoffCalculator(model, device="cuda", dtype="float32")
    assert batched.radial_table and calc.radial_table
    pos = np.stack([atoms.positions, atoms.positions + 0.02])
    energy, forces = batched(pos)
    for k in range(2):
        a = atoms.copy()
        a.positions = pos[k]
        a.calc = calc
        assert abs(a.get_potential_energy() - energy[k]) < 1e-4 * len(a)
        np.testing.assert_allclose(forces[k], a.get_forces(), atol=1e-4)


def test_a_failing_replica_stops_alone(mol_model, tmp_path):
    """Replica 1 starts with an H atom flying at its carbon (0.5 Å/fs): it must fail at step 1
    on the distance criterion; replicas 0 and 2 (at rest) run on and equal single runs."""
    from ase import units

    starts = [ethanol() for _ in range(3)]
    for a in starts:
        a.set_momenta(np.zeros((len(a), 3)))
    carbon, hydrogen = 0, 3  # a C-H bond of ethanol
    bond = starts[1].positions[carbon] - starts[1].positions[hydrogen]
    p = np.zeros((len(starts[1]), 3))
    p[hydrogen] = 0.5 / units.fs * bond / np.linalg.norm(bond) * starts[1].get_masses()[hydrogen]
    starts[1].set_momenta(p)
    crit = FailureCriteria(max_force=None, temperature_factor=None, min_distance=0.8,
                           check_bonds=False)
    s = MDSettings(ensemble="nve", velocities="keep", timestep_fs=1.0, steps=30,
                   log_every=1, traj_every=5, failure=crit)
    res = run_replicas(mol_model, ethanol(), s, replicas=3, structures=starts,
                       output=tmp_path)
    assert res[1].failed and res[1].failure.reason == "distance"
    assert res[1].failure.step == res[1].steps_done == 1
    for r in (0, 2):
        assert not res[r].failed and res[r].steps_done == 30
        assert_same(run_md(mol_model, starts[r], s), res[r])
    # each replica wrote what a single run writes; the failed one ends on its failure frame
    import ase.io

    frames = ase.io.read(tmp_path / "replica_001" / "trajectory.extxyz", index=":")
    assert frames[-1].info["failure"] == "distance" and frames[-1].info["step"] == 1
    assert (tmp_path / "replica_002" / "thermo.csv").read_text().count("\n") == 32
    assert replica_steps_per_s(res) > 0


def test_replica_plan_errors(mol_model):
    with pytest.raises(ValueError, match="3 replicas need 3 seeds and 3 temperatures"):
        run_replicas(mol_model, ethanol(), MDSettings(steps=1), replicas=3,
                     temperatures=[300.0, 400.0])
    # multiple time stepping is batched (test_batched_mts_equals_single_runs), on "both" models
    with pytest.raises(ValueError, match="needs a model with force_head='both'"):
        run_replicas(mol_model, ethanol(), MDSettings(steps=1, forces="mts"), replicas=2)


def test_cli_replicas(mol_model, tmp_path):
    import json

    import ase.io

    from geoff.checkpoint import save
    from geoff.cli import main

    save(mol_model, tmp_path / "m.ckpt")
    ase.io.write(tmp_path / "eth.xyz", ethanol())
    out = tmp_path / "run"
    code = main(["md", str(tmp_path / "m.ckpt"), str(tmp_path / "eth.xyz"), "--ensemble",
                 "bussi", "--temperatures", "300", "600", "--steps", "6", "--tau", "20",
                 "--seed", "7", "--out", str(out), "--threads", "1"])
    assert code == 0
    summary = json.loads((out / "replicas.json").read_text())
    assert [(r["seed"], r["temperature_K"], r["steps_done"]) for r in summary["replicas"]] == \
        [(7, 300.0, 6), (8, 600.0, 6)]
    for r in range(2):
        metrics = json.loads((out / f"replica_{r:03d}" / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["steps_done"] == 6


def study_rows(config: dict, tmp_path) -> dict:
    """{batched: results.csv rows} of the study run per seed (False) and batched (True)."""
    import csv

    from geoff.md.study import run_study

    rows = {}
    for batched in (False, True):
        out = tmp_path / f"out{batched}"
        run_study({**config, "replicas": batched}, output=out, progress=False)
        with open(out / "results.csv") as fh:
            rows[batched] = list(csv.DictReader(fh))
    return rows


def test_study_replicas_equal_the_per_seed_study(tmp_path):
    """``replicas: true`` batches a cell's seeds; the study's numbers stay those of the
    per-seed runs."""
    from geoff.checkpoint import save

    save(small_model("schnet"), tmp_path / "cons.ckpt")
    config = tiny_cu_study(
        "tiny-replicas", [{"name": "cons", "checkpoint": str(tmp_path / "cons.ckpt")}],
        [{"name": "nvt", "ensemble": "bussi", "temperature_K": 400, "tau_fs": 10,
          "time_ps": 0.01}], seeds=(0, 1, 2))
    rows = study_rows(config, tmp_path)
    assert len(rows[True]) == len(rows[False]) == 3
    for a, b in zip(rows[False], rows[True]):
        assert (a["seed"], a["status"], a["steps_done"]) == (b["seed"], b["status"],
                                                              b["steps_done"]) != ("", "", "")
        for key in ("drift_meV_atom_ps", "T_mean", "fluct_meV_atom"):
            assert abs(float(a[key]) - float(b[key])) <= 1e-8 * max(1.0, abs(float(a[key]))), key
    assert len({r["T_mean"] for r in rows[True]}) == 3  # three seeds, three trajectories
    # batched: the seeds advanced together, so they share one integration time
    assert len({r["steps_per_s"] for r in rows[True]}) == 1
    assert len({r["steps_per_s"] for r in rows[False]}) == 3


def test_a_raising_batch_stops_every_running_replica(mol_model, monkeypatch):
    """An exception in the batched step (not a NaN: that stays per replica) cannot be pinned
    on one replica: all running replicas stop at that step with reason 'error'."""
    import geoff.md.replicas as R

    class Flaky(R.BatchedForces):
        calls = 0

        def __call__(self, positions):
            Flaky.calls += 1
            if Flaky.calls == 4:  # the start, then steps 1 and 2; step 3 raises
                raise RuntimeError("device lost")
            return super().__call__(positions)

    monkeypatch.setattr(R, "BatchedForces", Flaky)
    res = run_replicas(mol_model, ethanol(), MDSettings(steps=10, failure=NO_CHECKS),
                       replicas=2)
    assert [(r.failure.reason, r.failure.step, r.steps_done) for r in res] == \
        [("error", 3, 3)] * 2
    assert "device lost" in res[0].failure.message


@pytest.mark.parametrize("ensemble", ["nve", "bussi"])
def test_batched_mts_equals_single_runs(ensemble):
    """Multiple time stepping of a force_head="both" model, batched, follows the single
    ``MultipleTimeStepVerlet`` runs of the same seeds (positions and the synchronised-step
    thermo log to 1e-10)."""
    model = small_model("schnet", species=("C", "H", "O"), cutoff=4.0, force_head="both")
    s = MDSettings(ensemble=ensemble, forces="mts", mts_steps=3, temperature_K=500.0,
                   timestep_fs=0.5, steps=25, seed=2, tau_fs=20.0, log_every=3,
                   traj_every=5, failure=NO_CHECKS)
    batched = run_replicas(model, ethanol(), s, replicas=2)
    for r, res in enumerate(batched):
        assert_same(run_md(model, ethanol(), s, seed=2 + r), res)
    assert np.abs(batched[0].frames[-1].positions - batched[1].frames[-1].positions).max() > 1e-3


def test_deadline_censors_the_batch(mol_model, tmp_path):
    """Past the deadline the batch stops: no failure, fewer steps than asked, files kept."""
    import time

    s = MDSettings(ensemble="langevin", steps=50, failure=NO_CHECKS, log_every=1)
    res = run_replicas(mol_model, ethanol(), s, replicas=2, output=tmp_path,
                       deadline=time.time() - 1.0)
    assert [(r.failed, r.steps_done, r.steps_requested) for r in res] == [(False, 0, 50)] * 2
    assert (tmp_path / "replica_000" / "thermo.csv").read_text().count("\n") == 2


def test_suspects_flag_what_the_monitor_fails(mol_model):
    """The vectorised per-step tests flag exactly the replicas whose monitor fails a
    per-step criterion (here: a force limit and a temperature limit)."""
    from geoff.md.failure import FailureMonitor
    from geoff.md.integrators import degrees_of_freedom
    from geoff.md.replica_integrators import make_batched_integrator
    from geoff.md.replicas import suspects

    atoms = ethanol()
    pos = np.stack([atoms.positions, atoms.positions * 0.9, atoms.positions])
    mom = np.zeros_like(pos)
    mom[2, 0] = 3.0  # a hot replica
    n_dof = degrees_of_freedom(atoms, "nve")
    integ = make_batched_integrator("nve", pos, mom, atoms.get_masses(),
                                    BatchedForces(mol_model, atoms), 0.5, [300.0] * 3, 100.0,
                                    [0, 1, 2], n_dof)
    fmax = np.abs(integ.forces).reshape(3, -1).max(1)
    crit = FailureCriteria(max_force=float(fmax.min() + fmax.max()) / 2, temperature_factor=2.0,
                           min_distance=0.0, check_bonds=False, check_every=100)

    class Rep:
        monitor = FailureMonitor(atoms, crit, temperature_K=300.0)

    flagged = set(suspects(integ, [Rep] * 3, [0, 1, 2], n_dof).tolist())
    expected = set()
    for r in range(3):
        a = atoms.copy()
        a.positions, a.calc = pos[r], None
        a.set_momenta(mom[r])
        if Rep.monitor.check(1, a, integ.forces[r], float(integ.energy[r]),
                             float(integ.kinetic([r])[0]), n_dof) is not None:
            expected.add(r)
    assert flagged == expected and 2 in flagged and len(flagged) >= 2


def test_deadline_from_env(monkeypatch):
    from geoff.md.study_replicas import deadline_from_env

    monkeypatch.delenv("GEOFF_REPLICA_DEADLINE", raising=False)
    monkeypatch.delenv("GEOFF_REPLICA_WALL_S", raising=False)
    assert deadline_from_env(100.0) is None
    monkeypatch.setenv("GEOFF_REPLICA_WALL_S", "30")
    assert deadline_from_env(100.0) == 130.0
    monkeypatch.setenv("GEOFF_REPLICA_DEADLINE", "120")
    assert deadline_from_env(100.0) == 120.0


@pytest.mark.parametrize("periodic", [False, True])
def test_geometry_screen_never_misses_a_failure(periodic):
    """The all-pairs screen flags every replica whose monitor fails a distance or bond
    criterion (it may flag more, never fewer), molecules and orthorhombic cells alike."""
    from geoff.md.failure import FailureMonitor
    from geoff.md.replica_checks import GeometryScreen

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3) if periodic else ethanol()
    crit = FailureCriteria(max_force=None, temperature_factor=None, max_bond_deviation=0.5,
                           check_bonds=True, min_distance_factor=0.8)
    monitors = [FailureMonitor(atoms, crit) for _ in range(40)]
    screen = GeometryScreen.build(monitors, atoms)
    assert screen is not None
    rng = np.random.default_rng(0)
    pos = np.stack([atoms.positions + rng.normal(scale=0.02 * k, size=atoms.positions.shape)
                    for k in range(40)])
    flagged = set(screen.flag(pos, np.arange(40)).tolist())
    failed = set()
    for k in range(40):
        a = atoms.copy()
        a.positions = pos[k]
        if monitors[k].check(0, a) is not None:
            failed.add(k)
    assert failed <= flagged
    assert 0 < len(failed) < 40 and 0 in set(range(40)) - flagged  # some fail, the start not


def test_study_batches_mts_cells(tmp_path):
    """A study's MTS cell (a "both" model) runs its seeds as one batch, with the numbers of
    the per-seed runs."""
    from geoff.checkpoint import save

    save(small_model("schnet", force_head="both"), tmp_path / "both.ckpt")
    config = tiny_cu_study(
        "tiny-mts", [{"name": "mts", "checkpoint": str(tmp_path / "both.ckpt"),
                      "forces": "mts", "mts_steps": 2}],
        [{"name": "nvt", "ensemble": "bussi", "temperature_K": 400, "tau_fs": 10,
          "time_ps": 0.008}])
    rows = study_rows(config, tmp_path)
    assert [(r["seed"], r["status"], r["steps_done"]) for r in rows[True]] == \
        [(r["seed"], r["status"], r["steps_done"]) for r in rows[False]] == \
        [("0", "ok", "8"), ("1", "ok", "8")]
    for a, b in zip(rows[False], rows[True]):
        assert abs(float(a["T_mean"]) - float(b["T_mean"])) <= 1e-8 * float(a["T_mean"])
    assert len({r["steps_per_s"] for r in rows[True]}) == 1  # one batch


def _captured(batched, **kwargs):
    """``batched`` through ``CapturedReplicas`` run eagerly on its padded buckets (the CPU's
    stand-in for the captured search and model)."""
    from geoff.md.replica_capture import CapturedReplicas

    assert batched.captured is None  # the CPU: nothing to capture
    batched.captured = CapturedReplicas(batched.model, batched.species, batched.cell,
                                        batched.pbc, batched.dtype, "cpu", pad_only=True,
                                        **kwargs)
    return batched


@pytest.mark.parametrize("name", ["schnet", "painn", "mace"])
def test_replicas_through_the_captured_search_equal_the_calculator(name):
    """The molecule and a triclinic periodic cell against the float64 calculator replica by
    replica; the molecule stretched first (fewer edges), so that the next batch has more
    edges than its bucket holds and regrows it."""
    from ase import Atoms

    model = small_model(name, species=("Cu", "Zr", "C", "H", "O"), cutoff=3.0)
    rng = np.random.default_rng(3)
    cell = np.array([[7.0, 0.0, 0.0], [2.0, 6.8, 0.0], [-1.0, 1.5, 7.2]])
    crystal = Atoms("Cu16", cell=cell, pbc=True,
                    scaled_positions=(np.indices((2, 2, 4)).reshape(3, -1).T + 0.25) / [2, 2, 4])
    for atoms in (ethanol(), crystal):
        batched = _captured(BatchedForces(model, atoms, dtype="float64"))
        pos = np.stack([atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
                        for _ in range(8)])
        centre = atoms.positions.mean(0)
        stretched = centre + 1.5 * (pos - centre)
        for batch in (stretched, pos):
            assert_equal_to_the_calculator(model, atoms, batch, batched(batch), 1e-10)
        stats = batched.captured.stats
        regrown = int(not atoms.pbc.any())  # a cell's density does not change by stretching
        assert stats["regrown"] == regrown and stats["calls"] == 2 + regrown, stats


def test_captured_replicas_take_lost_replicas_and_direct_heads():
    """A non-finite replica leaves the batch (a smaller replica count: a shape of its own);
    multiple time stepping's two force sets and the direct head's forward-only call."""
    model = small_model("painn", species=("C", "H", "O"), cutoff=4.0, force_head="both")
    atoms = ethanol()
    usual = BatchedForces(model, atoms, dtype="float64")
    batched = _captured(BatchedForces(model, atoms, dtype="float64"))
    pos = np.stack([atoms.positions + 0.03 * k for k in range(3)])
    pos[1, 2] = np.nan
    for method in ("__call__", "split", "direct"):
        for a, b in zip(getattr(usual, method)(pos), getattr(batched, method)(pos)):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert np.isnan(batched(pos)[0][1])
    assert {key[0] for key in batched.captured.buckets} == {2}


def test_captured_replicas_capture_after_and_size_limit():
    model = small_model("schnet", species=("C", "H", "O"), cutoff=4.0)
    atoms = ethanol()
    pos = np.stack([atoms.positions] * 2)
    batched = _captured(BatchedForces(model, atoms, dtype="float64"), capture_after=2)
    batched(pos)
    assert batched.captured.stats["calls"] == 0  # first call: the usual path
    batched(pos)
    assert batched.captured.stats["calls"] == 1
    small = _captured(BatchedForces(model, atoms, dtype="float64"), max_atoms=17)
    small(pos)  # 18 atoms in all: over the limit
    assert small.captured.stats["calls"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["schnet", "painn", "mace"])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 2e-4)])
def test_captured_replicas_on_gpu_equal_the_usual_path(name, dtype, tol):
    from ase import Atoms

    model = small_model(name, species=("Cu", "Zr", "C", "H", "O"), cutoff=3.0)
    cell = np.array([[7.0, 0.0, 0.0], [2.0, 6.8, 0.0], [-1.0, 1.5, 7.2]])
    crystal = Atoms("Cu16", cell=cell, pbc=True,
                    scaled_positions=(np.indices((2, 2, 4)).reshape(3, -1).T + 0.25) / [2, 2, 4])
    rng = np.random.default_rng(4)
    for atoms in (ethanol(), crystal):
        usual = BatchedForces(model, atoms, device="cuda", dtype=dtype, cuda_graphs=False)
        captured = BatchedForces(model, atoms, device="cuda", dtype=dtype, cuda_graphs=True)
        assert captured.captured is not None
        for _ in range(3):
            pos = np.stack([atoms.positions + rng.normal(0, 0.05, atoms.positions.shape)
                            for _ in range(4)])
            for a, b in zip(usual(pos), captured(pos)):
                np.testing.assert_allclose(b, a, rtol=0, atol=tol * max(1.0, np.abs(a).max()))
        stats = captured.captured.stats
        assert stats["captures"] >= 1 and stats["failed"] == 0, captured.captured.failed

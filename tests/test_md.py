"""MD harness: integrators, energy conservation, failure detection, metrics (float64).

Energy conservation is measured on the conserved quantity per atom over the same simulated
time at each dt: the *drift* is the slope of a linear fit (meV/atom/ps) and the *fluctuation*
the RMS deviation from that fit. Velocity Verlet conserves a shadow Hamiltonian that differs
from H by O(dt^2), so the fluctuation at dt is 4x the one at dt/2; that ratio is what the
dt^2 test checks (the drift of a symplectic integrator is round-off and chaos, not a clean
power of dt).
"""
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from conftest import rattled_triclinic, small_model
from geoff.calculators import GeoffCalculator
from geoff.md import FailureCriteria, MDSettings, Reference, run_md
from geoff.md import metrics as M
from geoff.md.runners import LAMMPSRunner, initial_velocities, locate_plugin

NO_CHECKS = FailureCriteria(max_force=None, temperature_factor=None, min_distance_factor=None)


pytestmark = pytest.mark.usefixtures("one_thread")


def cu32(zr=True):
    """32-atom fcc cell (4 Zr when ``zr``), so both species of the test models are used."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    if zr:
        symbols = atoms.get_chemical_symbols()
        for k in (0, 9, 18, 27):
            symbols[k] = "Zr"
        atoms.set_chemical_symbols(symbols)
    return atoms


@pytest.fixture(scope="module")
def nve_runs():
    """NVE of a random-weight conservative SchNet at 300 K for 0.1 ps, dt = 0.5 and 1 fs."""
    model = small_model("schnet")
    out = {}
    for dt in (0.5, 1.0):
        r = run_md(model, cu32(), ensemble="nve", temperature_K=300.0, timestep_fs=dt,
                   steps=int(round(100 / dt)), log_every=1, traj_every=1000, failure=NO_CHECKS)
        assert not r.failed
        th = r.thermo
        out[dt] = (M.energy_drift(th["time_ps"], th["conserved"], r.n_atoms),
                   M.energy_fluctuation(th["time_ps"], th["conserved"], r.n_atoms), r)
    return out


def test_conservative_nve_conserves_energy(nve_runs):
    drift, fluct, r = nve_runs[0.5]
    assert r.n_atoms == 32 and r.steps_done == 200
    # < 1e-6 eV/atom/ps = 1e-3 meV/atom/ps
    assert abs(drift) < 1e-3, f"drift {drift} meV/atom/ps"
    assert r.thermo["etot"].std() / 32 < 1e-6


def test_energy_error_scales_as_dt_squared(nve_runs):
    ratio = nve_runs[1.0][1] / nve_runs[0.5][1]
    assert 3.5 < ratio < 4.5, f"fluctuation ratio {ratio} for dt 1 fs / 0.5 fs (expected 4)"


def test_direct_head_drift_is_reported(nve_runs, record_property):
    model = small_model("schnet", force_head="both")
    r = run_md(model, cu32(), ensemble="nve", forces="direct", temperature_K=300.0,
               timestep_fs=0.5, steps=100, log_every=1, traj_every=1000, failure=NO_CHECKS)
    drift = M.energy_drift(r.thermo["time_ps"], r.thermo["conserved"], r.n_atoms)
    assert np.isfinite(drift)
    record_property("direct_drift_meV_atom_ps", drift)
    record_property("conservative_drift_meV_atom_ps", nve_runs[0.5][0])
    print(f"direct head drift {drift:.3g} meV/atom/ps; conservative "
          f"{nve_runs[0.5][0]:.3g} meV/atom/ps")


def test_mts_with_one_inner_step_is_velocity_verlet():
    model = small_model("schnet", force_head="both")
    common = dict(ensemble="nve", temperature_K=600.0, timestep_fs=1.0, steps=30, seed=3,
                  log_every=1, traj_every=30, failure=NO_CHECKS)
    vv = run_md(model, cu32(), forces="conservative", **common)
    mts = run_md(model, cu32(), forces="mts", mts_steps=1, **common)
    assert vv.steps_done == mts.steps_done == 30
    np.testing.assert_allclose(mts.frames[-1].positions, vv.frames[-1].positions, atol=1e-10)
    np.testing.assert_allclose(mts.frames[-1].get_momenta(), vv.frames[-1].get_momenta(),
                               atol=1e-10)
    np.testing.assert_allclose(mts.thermo["conserved"], vv.thermo["conserved"], atol=1e-9)


def test_mts_conserves_the_conservative_energy_better_than_direct_forces():
    model = small_model("schnet", force_head="both")
    common = dict(ensemble="nve", temperature_K=300.0, timestep_fs=1.0, steps=60,
                  log_every=2, traj_every=1000, failure=NO_CHECKS)
    d = run_md(model, cu32(), forces="direct", **common)
    m = run_md(model, cu32(), forces="mts", mts_steps=2, **common)
    assert (m.thermo["step"] % 2 == 0).all()  # logged at synchronised steps only
    drift = {k: abs(M.energy_drift(r.thermo["time_ps"], r.thermo["conserved"], 32))
             for k, r in (("direct", d), ("mts", m))}
    assert drift["mts"] < drift["direct"]


@pytest.mark.parametrize("ensemble", ["langevin", "bussi", "nose-hoover"])
def test_thermostat_conserved_quantity(ensemble):
    """The thermostat's energy exchange is accounted for: the conserved quantity moves far less
    than the total energy does."""
    model = small_model("schnet")
    r = run_md(model, cu32(), ensemble=ensemble, temperature_K=600.0, init_temperature_K=100.0,
               tau_fs=10.0, timestep_fs=1.0, steps=60, log_every=2, failure=NO_CHECKS)
    th = r.thermo
    exchanged = np.ptp(th["etot"])
    assert exchanged > 0.05  # the bath heated the cell (eV)
    assert np.ptp(th["conserved"]) < 1e-3 * exchanged
    assert r.n_dof == (96 if ensemble == "langevin" else 93)


# --------------------------------------------------------------------------------------------
# Failure detection
# --------------------------------------------------------------------------------------------

def _two_atoms_closing(speed_A_per_fs=0.1):
    """Two Cu atoms 6 Å apart approaching each other at ``speed`` (free flight)."""
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [6.0, 0, 0]], pbc=False)
    v = 0.5 * speed_A_per_fs / units.fs
    atoms.set_velocities([[v, 0, 0], [-v, 0, 0]])
    return atoms


def _zero_force_model():
    model = small_model("schnet")
    model.set_normalisation(torch.zeros(2), torch.zeros(2))  # E constant, F exactly 0
    return model


@pytest.mark.parametrize("criterion, expected_step", [("distance", 50), ("bond", 34)])
def test_failure_stops_at_the_right_step_and_keeps_frames(tmp_path, criterion, expected_step):
    # d(n) = 6 - 0.1 n Å. distance: first d < 1.05 Å is n = 50; bond: a Cu-Cu pair closer than
    # 1.0 x (2 x 1.32 Å) = 2.64 Å forms a bond not in the starting topology: n = 34.
    if criterion == "distance":
        criteria = FailureCriteria(min_distance=1.05, check_bonds=False, temperature_factor=None)
    else:
        criteria = FailureCriteria(min_distance_factor=None, temperature_factor=None)
    r = run_md(_zero_force_model(), _two_atoms_closing(), ensemble="nve", velocities="keep",
               timestep_fs=1.0, steps=200, traj_every=10, log_every=10, failure=criteria,
               output=tmp_path)
    assert r.failed and r.failure.reason == criterion
    assert r.failure.step == expected_step == r.steps_done
    import ase.io

    frames = ase.io.read(tmp_path / "trajectory.extxyz", index=":")
    steps = [f.info["step"] for f in frames]
    assert steps == list(range(0, expected_step, 10)) + [expected_step]
    assert frames[-1].info["failure"] == criterion
    d = frames[-1].get_distance(0, 1)
    assert d == pytest.approx(6.0 - 0.1 * expected_step)
    assert (tmp_path / "thermo.csv").read_text().count("\n") >= expected_step // 10 + 1


def _first_violation(model, atoms, dt_fs, steps, max_force, max_temperature, n_dof):
    """Independent reference: plain ASE velocity Verlet, checked after every step."""
    atoms = atoms.copy()
    atoms.calc = GeoffCalculator(model, dtype="float64")
    dyn = VelocityVerlet(atoms, dt_fs * units.fs)
    first = {}
    for step in range(1, steps + 1):
        dyn.run(1)
        f = np.abs(atoms.get_forces()).max()
        t = 2 * atoms.get_kinetic_energy() / (n_dof * units.kB)
        if f > max_force:
            first.setdefault("force", step)
        if t > max_temperature:
            first.setdefault("temperature", step)
        if len(first) == 2:
            break
    return first


def test_exploding_run_fails_at_the_first_bad_step(tmp_path):
    """A stiff model (large energy scale) with a too-long time step: Verlet blows up."""
    model = small_model("schnet")
    model.set_normalisation(torch.tensor([-3.0, -3.0]), torch.tensor([300.0, 300.0]))
    atoms = cu32()
    initial_velocities(atoms, 300.0, seed=0)
    ref = _first_violation(model, atoms, 4.0, 40, max_force=16.0, max_temperature=1500.0,
                           n_dof=93)
    assert 1 < ref["force"] <= 40 and 1 < ref["temperature"] <= 40
    for reason, crit in [("force", FailureCriteria(max_force=16.0, temperature_factor=None,
                                                   min_distance_factor=None)),
                         ("temperature", FailureCriteria(max_force=None, temperature_factor=5.0,
                                                         min_distance_factor=None))]:
        out = tmp_path / reason
        r = run_md(model, atoms, ensemble="nve", temperature_K=300.0, velocities="keep",
                   timestep_fs=4.0, steps=100, traj_every=1, failure=crit, output=out)
        assert r.failure is not None and r.failure.reason == reason, r.failure
        assert r.failure.step == ref[reason]
        import ase.io

        frames = ase.io.read(out / "trajectory.extxyz", index=":")
        assert [f.info["step"] for f in frames] == list(range(ref[reason] + 1))


def test_nan_model_fails_at_step_zero():
    model = small_model("schnet")
    model.set_normalisation(torch.zeros(2), torch.tensor([float("nan")] * 2))
    r = run_md(model, cu32(), steps=10)
    assert r.failure.reason == "nan" and r.failure.step == 0 and r.steps_done == 0


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def test_rdf_error_is_zero_for_identical_trajectories():
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(3):
        a = cu32(zr=False)
        a.positions += rng.normal(scale=0.1, size=a.positions.shape)
        frames.append(a)
    r, g = M.rdf(frames, r_max=5.0, n_bins=50)
    _, g2 = M.rdf([f.copy() for f in frames], r_max=5.0, n_bins=50)
    assert M.rdf_error(g, g2, 5.0) == 0.0
    assert M.rdf_error(g, np.zeros_like(g), 5.0) > 0


def test_rdf_is_right_for_cells_smaller_than_r_max():
    """One-atom fcc cell (far smaller than 2 r_max) = its 4x4x4 repetition; 12 neighbours."""
    small = bulk("Cu", "fcc", a=3.61)  # primitive, triclinic, 1 atom
    r, g_small = M.rdf([small], r_max=6.0, n_bins=120)
    _, g_big = M.rdf([small * (4, 4, 4)], r_max=6.0, n_bins=120)
    np.testing.assert_allclose(g_small, g_big, atol=1e-9)
    rho = 4 / 3.61 ** 3
    dr = r[1] - r[0]
    shell = np.cumsum(g_small * 4 * np.pi * r ** 2 * dr) * rho
    first = 3.61 / np.sqrt(2)
    assert shell[np.searchsorted(r, first + 0.2)] == pytest.approx(12, rel=0.02)
    assert r[np.argmax(g_small)] == pytest.approx(first, abs=dr)


def test_molecule_distance_distribution_is_normalised():
    from ase.build import molecule

    r, h = M.rdf([molecule("CH4")], r_max=3.0, n_bins=60)
    assert np.sum(h) * (r[1] - r[0]) == pytest.approx(1.0)


def test_jacobian_asymmetry_conservative_vs_direct():
    atoms = rattled_triclinic()
    cons = small_model("schnet")
    both = small_model("schnet", force_head="both")
    assert M.jacobian_asymmetry(cons, atoms) < 1e-10
    assert M.jacobian_asymmetry(both, atoms, forces="conservative") < 1e-10
    lam = M.jacobian_asymmetry(both, atoms, forces="direct")
    assert lam > 1e-4
    # the autograd Jacobian of the direct head equals central finite differences
    j = M.force_jacobian(both, atoms, forces="direct")
    calc = GeoffCalculator(both, dtype="float64", forces="direct")
    k, h = 4, 1e-5
    a = atoms.copy()
    a.calc = calc
    a.positions[k // 3, k % 3] += h
    fp = a.get_forces().reshape(-1)
    a.positions[k // 3, k % 3] -= 2 * h
    fm = a.get_forces().reshape(-1)
    np.testing.assert_allclose(j[:, k], (fp - fm) / (2 * h), atol=1e-7)


def test_kinetic_energy_ks_and_temperature():
    rng = np.random.default_rng(0)
    n_dof, T = 93, 600.0
    k = rng.gamma(n_dof / 2, units.kB * T, size=4000)
    ks = M.kinetic_energy_ks(k, n_dof, T)
    assert ks["ks"] < 0.03
    assert M.kinetic_energy_ks(k * 1.2, n_dof, T)["ks"] > 0.3
    stats = M.temperature_stats(M.temperature(k, n_dof), T)
    assert abs(stats["T_error"]) < 5


def test_settings_validation():
    with pytest.raises(ValueError, match="unknown ensemble"):
        MDSettings(ensemble="npt")
    with pytest.raises(ValueError, match="forces"):
        MDSettings(forces="magic")
    assert MDSettings(forces="mts", mts_steps=4, log_every=10).log_every == 12
    with pytest.raises(ValueError, match="force_head='both'"):
        run_md(small_model("schnet"), cu32(), forces="mts", steps=1)
    with pytest.raises(ValueError, match="supports ensembles"):
        run_md(small_model("schnet", force_head="both"), cu32(), forces="mts",
               ensemble="langevin", steps=1)


# --------------------------------------------------------------------------------------------
# LAMMPS engine behind the same interface
# --------------------------------------------------------------------------------------------

def _lammps_or_skip():
    reason = LAMMPSRunner().unavailable(Reference("eam", {"file": "Cu_u3.eam"}), MDSettings())
    if reason:
        pytest.skip(reason)


def test_lammps_runner_matches_ase_for_eam(tmp_path):
    _lammps_or_skip()
    atoms = cu32(zr=False)
    ref = Reference("eam", {"file": "Cu_u3.eam"})
    kw = dict(ensemble="nve", temperature_K=600.0, timestep_fs=2.0, steps=20, log_every=5,
              traj_every=10, failure=NO_CHECKS)
    a = run_md(ref, atoms, engine="ase", **kw)
    b = run_md(ref, atoms, engine="lammps", output=tmp_path, **kw)
    # two EAM implementations (matscipy's and LAMMPS' splines of the same tables)
    np.testing.assert_allclose(b.thermo["epot"], a.thermo["epot"], atol=1e-3)
    np.testing.assert_allclose(b.frames[-1].positions, a.frames[-1].positions, atol=1e-4)
    assert (tmp_path / "trajectory.extxyz").exists()


@pytest.mark.lammps
@pytest.mark.slow  # the plugin's TorchScript warm-up makes the first calls take ~1 s each
def test_lammps_runner_matches_ase_for_a_geoff_model(tmp_path):
    _lammps_or_skip()
    if locate_plugin() is None:
        pytest.skip("pair_style geoff plugin not built (geoff lammps build)")
    model = small_model("schnet")
    kw = dict(ensemble="nve", temperature_K=300.0, timestep_fs=1.0, steps=10, log_every=5,
              traj_every=5, failure=NO_CHECKS)
    a = run_md(model, cu32(), engine="ase", **kw)
    b = run_md(model, cu32(), engine="lammps", output=tmp_path, **kw)
    np.testing.assert_allclose(b.thermo["epot"], a.thermo["epot"], atol=1e-8)
    np.testing.assert_allclose(b.frames[-1].positions, a.frames[-1].positions, atol=1e-8)


def test_lammps_runner_says_why_it_cannot_run_mts():
    reason = LAMMPSRunner().unavailable(small_model("schnet", force_head="both"),
                                        MDSettings(forces="mts"))
    assert reason and ("ASE engine" in reason or "LAMMPS" in reason)


@pytest.mark.slow
@pytest.mark.parametrize("ensemble", ["langevin", "bussi", "nose-hoover"])
def test_thermostats_sample_the_canonical_temperature(ensemble):
    """EMT Cu, 6 ps at 600 K: mean T within 5 % of the target (32 atoms: std(T) = 88 K, and a
    Nose-Hoover chain decorrelates slowly, so the standard error of 5 ps is 10-15 K) and kinetic
    energies close to the canonical Gamma distribution (KS distance; a loose bound, because
    successive samples are correlated)."""
    r = run_md(Reference("emt"), cu32(zr=False), ensemble=ensemble, temperature_K=600.0,
               init_temperature_K=1200.0, tau_fs=50.0, timestep_fs=2.0, steps=3000,
               log_every=5, traj_every=3000)
    th = r.thermo
    keep = th["time_ps"] > 1.0
    stats = M.temperature_stats(th["temperature"][keep], 600.0)
    assert abs(stats["T_rel_error"]) < 0.05, stats
    ks = M.kinetic_energy_ks(th["ekin"][keep], r.n_dof, 600.0)
    assert ks["ks"] < 0.1, ks
    drift = M.energy_drift(th["time_ps"], th["conserved"], r.n_atoms)
    assert abs(drift) < 0.5  # meV/atom/ps: the thermostat's work is accounted for

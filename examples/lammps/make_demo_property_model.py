"""Write demo_barrier.pt: an UNTRAINED SchNet with one per-atom head, barrier_mean (Cu, Zr,
cutoff 5 Å, random weights), so that in.barriers runs without a trained model.

Its values (eV, about 0.9 for Cu and 1.1 for Zr, varying with the environment) mean nothing:
for real barriers train a property model (`geoff train ... --target barrier_mean`, README
"Per-atom properties") and export it (`geoff export runs/b/best.ckpt -o barrier.pt`).

    python make_demo_property_model.py   # then: lmp -in in.barriers
"""
import torch

from geoff.export import export
from geoff.potentials import build_model

torch.manual_seed(0)
model = build_model("schnet", species=["Cu", "Zr"], cutoff=5.0, properties=["barrier_mean"])
model.property_heads["barrier_mean"].set_normalisation([0.9, 1.1], [0.3, 0.3])  # eV
print(f"wrote {export(model, 'demo_barrier.pt')} (untrained: demo values only)")

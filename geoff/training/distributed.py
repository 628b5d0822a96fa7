"""The process a training run lives in: device, threads, and data-parallel plumbing.

``torchrun --nproc_per_node K`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE``; without them the run is one process (rank 0 of 1) and nothing here
touches ``torch.distributed``. With them, :func:`start` joins the process group (NCCL on GPUs,
gloo on CPU), one GPU per process (the local rank's), and the helpers below keep the ranks in
step: sums are all-reduced in float64, and a stop wanted by one rank is taken by all.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    """Where this process runs: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    local_world: int
    device: torch.device
    owns_process_group: bool = False  # True when start() made the group (finish() ends it)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":  # one GPU per process: the local rank's
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
        torch.cuda.set_device(device)
    return device


def start(device: str = "auto", num_threads: int = 0, deterministic: bool = False) -> Runtime:
    """Pick the device, join the process group under torchrun, set threads and determinism.

    ``num_threads`` 0 keeps torch's default, except under torchrun where the cores are shared
    out among the processes of a node.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    runtime = Runtime(rank=int(os.environ.get("RANK", "0")), world=world,
                      local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
                      device=_device(device, local_rank))
    if world > 1 and not dist.is_initialized():
        if runtime.device.type == "cuda":
            dist.init_process_group("nccl", device_id=runtime.device)
        else:
            dist.init_process_group("gloo")
        runtime.owns_process_group = True
    if world > 1:
        # Benign: a (1, F) weight's gradient arrives with other (equivalent) strides.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
    threads = num_threads
    if threads == 0 and world > 1:
        threads = max(1, torch.get_num_threads() // max(runtime.local_world, 1))
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    return runtime


def wrap(model: torch.nn.Module, runtime: Runtime, find_unused_parameters: bool):
    """``model`` itself in one process, else a DistributedDataParallel around it.

    ``find_unused_parameters``: a direct force head leaves parameters out of some graphs.
    """
    if runtime.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
               broadcast_buffers=False, find_unused_parameters=find_unused_parameters)


def all_reduce_sums(sums: Dict[str, float], world: int, device) -> Dict[str, float]:
    """Each value summed over all ranks (in float64); unchanged in one process."""
    if world <= 1:
        return sums
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def agree_to_stop(stopped: Optional[str], device) -> Optional[str]:
    """Stop on every rank when any rank wants to (else the others would wait forever)."""
    flag = torch.tensor([1.0 if stopped else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return (stopped or "another rank") if flag.item() > 0 else None


def finish(runtime: Runtime) -> None:
    """Wait for every rank, then leave the process group if :func:`start` made it."""
    if runtime.world > 1:
        dist.barrier()
        if runtime.owns_process_group:
            dist.destroy_process_group()

"""Host arrays onto a device without waiting for it, and results back in one transfer.

``torch.as_tensor(array, device="cuda")`` copies from pageable host memory and then
synchronises the stream: the host waits until every kernel queued before has run, and the
device then idles while the host launches the next ones. In a calculator call on a small
system, a dozen such copies (positions, species, cell, the neighbour search's bins) cost more
than the kernels between them. ``to_device`` stages the array in pinned memory (PyTorch's
caching host allocator: no allocation after the first calls) and copies asynchronously.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor


def to_device(array, device, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``array`` (a numpy array, a number sequence or a tensor) as a tensor of ``dtype`` on
    ``device``; a copy from the host to CUDA does not wait for the device."""
    device = torch.device(device)
    if torch.is_tensor(array) and array.device.type != "cpu":
        return array.to(device=device, dtype=dtype)
    host = torch.as_tensor(array, dtype=dtype)  # converted on the host: one copy over
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def to_host(tensors: Dict[str, Tensor]) -> Dict[str, np.ndarray]:
    """float64 numpy copies of ``tensors`` (any shapes, float dtypes) through ONE
    device-to-host transfer: on a GPU each transfer waits for the device, and one per result
    cost ~0.1 ms per call at small sizes."""
    flat = [t.detach().reshape(-1) for t in tensors.values()]
    # one concatenation (mixed dtypes promote in it), widened to float64 on the host
    host = torch.cat(flat).cpu().numpy().astype(np.float64, copy=False) if flat \
        else np.zeros(0)
    out, start = {}, 0
    for (key, t), f in zip(tensors.items(), flat):
        out[key] = host[start:start + f.numel()].reshape(tuple(t.shape))
        start += f.numel()
    return out

"""Bytes autograd keeps for the backward pass, per atom, chunked against plain (issue 12).

    python benchmarks/saved_memory.py --models mace nequip painn schnet --atoms 500 \
        --edge-chunks 0 800

What a model keeps between its forward and its backward pass (every tensor saved for
backward, counted once per storage, through ``torch.autograd.graph.saved_tensors_hooks``) is
what grows with N in the GPU memory of an energy+forces call; transients (one chunk's
activations, one layer's gradients) come on top. It is exact and cheap to measure on the CPU
at a few hundred atoms, where peak RSS is mostly allocator noise. With ``--top`` it lists the
largest saved tensors by shape. FCC Cu, cutoff 5 Å, float32, the hyper-parameters of
``benchmarks/speed.py``; one forward pass, no timing.
"""
import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import CUTOFF, MODELS, structure  # noqa: E402


def saved_bytes(name: str, n_atoms: int, edge_chunk: int):
    """(atoms, edges, bytes saved for backward, Counter of bytes by (shape, dtype))."""
    from geoff.graph import atoms_to_graph
    from geoff.potentials import build_model
    from geoff.potentials.chunking import set_edge_chunk

    torch.manual_seed(0)
    model = build_model(name, species=["Cu", "Zr"], cutoff=CUTOFF, **MODELS[name]).float().eval()
    set_edge_chunk(model, edge_chunk)
    atoms = structure("cu", n_atoms)
    graph = atoms_to_graph(atoms, model, dtype=torch.float32)
    storages = {}
    by_shape = collections.Counter()

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in storages:
            storages[storage.data_ptr()] = storage.nbytes()
            by_shape[(tuple(t.shape), str(t.dtype))] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(graph)  # energy+forces: saves happen in the forward pass (and in recomputation,
        # under checkpoint's own hooks, which this one does not see)
    return len(atoms), int(graph["edge_index"].shape[1]), sum(storages.values()), by_shape


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--atoms", type=int, default=500)
    parser.add_argument("--edge-chunks", nargs="+", type=int, default=[0, 800])
    parser.add_argument("--top", type=int, default=0, help="list the largest saved tensors")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | atoms | edges | edge chunk | saved for backward, KB/atom |")
    print("|---|---|---|---|---|")
    for name in args.models:
        for chunk in args.edge_chunks:
            n, e, total, by_shape = saved_bytes(name, args.atoms, chunk)
            print(f"| {name} | {n} | {e} | {chunk or 'plain'} | {total / n / 1e3:.1f} |")
            for (shape, dtype), size in by_shape.most_common(args.top):
                print(f"|  | | | {shape} {dtype} | {size / n / 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

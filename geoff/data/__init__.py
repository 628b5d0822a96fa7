"""Reference data: generators (EMT, EAM, xTB) and extxyz reading/writing.

``generate("cu-emt", n=500, seed=0, path="cu.extxyz")`` returns labelled ``ase.Atoms``
frames (and writes them with their provenance); ``geoff data --help`` lists the generators.
"""
from .generators import GENERATORS, generate
from .io import read_dataset, read_provenance, reference, write_dataset

__all__ = ["GENERATORS", "generate", "read_dataset", "read_provenance", "reference",
           "write_dataset"]

"""Reference data: generators (EMT, EAM, xTB) and extxyz reading/writing."""
from .io import read_dataset, reference, write_dataset

__all__ = ["read_dataset", "reference", "write_dataset"]

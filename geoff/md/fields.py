"""Settings dataclasses built from user dicts, with unknown keys named in the error."""
from __future__ import annotations

from dataclasses import fields


def from_dict(cls, d: dict, what: str):
    """``cls(**d)``, or a ValueError naming the keys of ``d`` that ``cls`` has no field for
    (``what`` says what the keys are, e.g. "MD settings")."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; known: {sorted(known)}")
    return cls(**d)

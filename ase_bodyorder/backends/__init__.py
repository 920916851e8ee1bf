"""Backends evaluate energies and forces of many isolated subclusters.

They know nothing of body orders (docs/design.md, "Plan, evaluate, assemble"). The
metatomic backend needs torch; it is imported only when asked for, so that the ASE
calculator backend and everything else work without loading torch.
"""

from __future__ import annotations

import importlib

from .base import Backend, ClusterBatch
from .select import make_backend, model_label

__all__ = ["AseCalculatorBackend", "Backend", "BatchedCallableBackend", "ChgnetBackend", "ClusterBatch",
           "MaceBackend", "MetatomicBackend", "make_backend", "model_label"]

_LAZY = {
    "AseCalculatorBackend": ".ase_calculator",
    "BatchedCallableBackend": ".callable",
    "ChgnetBackend": ".chgnet",
    "MaceBackend": ".mace",
    "MetatomicBackend": ".metatomic",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

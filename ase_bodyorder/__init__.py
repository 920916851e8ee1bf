"""ase-bodyorder: many-body expansions of machine-learning interatomic potentials.

ASE calculators that truncate a trained MLIP at any body order, MD with per-step
many-body logs, and the analyses of arXiv 2509.14146 and 2502.16125.

The names below are imported on first use (PEP 562), so that ``import ase_bodyorder``
is quick and reading a log never loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "BodyOrderCalculator": ".calculator",
    "BatchedCallableBackend": ".backends.callable",
    "MODEL_CUTOFF": ".calculator",
    "Decomposition": ".decomposition",
    "decompose": ".decomposition",
    "read_log": ".h5md",
    "default_model": ".models",
    "list_models": ".models",
    "Subclusters": ".mbe",
    "plan_subclusters": ".mbe",
    "evaluate_subclusters": ".mbe",
    "assemble": ".mbe",
    "compare_expansions": ".compare",
    "shipped_clusters": ".compare",
    "export_truncated": ".export",
    "describe_model_file": ".export",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; nothing is imported at run time
    from .mbe import Subclusters, assemble, evaluate_subclusters, plan_subclusters
    from .calculator import MODEL_CUTOFF, BodyOrderCalculator
    from .backends.callable import BatchedCallableBackend
    from .decomposition import Decomposition, decompose
    from .h5md import read_log
    from .models import default_model, list_models
    from .compare import compare_expansions, shipped_clusters
    from .export import describe_model_file, export_truncated


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))

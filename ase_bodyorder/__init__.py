"""ase-bodyorder: many-body expansions of machine-learning interatomic potentials.

ASE calculators that truncate a trained MLIP at any body order, MD with per-step
many-body logs, and the analyses of arXiv 2509.14146 and 2502.16125.
"""

from .calculator import MODEL_CUTOFF, BodyOrderCalculator
from .decompose import Decomposition, decompose
from .h5md import read_log
from .models import default_model, list_models

__version__ = "0.1.0"

__all__ = [
    "BodyOrderCalculator",
    "Decomposition",
    "MODEL_CUTOFF",
    "__version__",
    "decompose",
    "default_model",
    "list_models",
    "read_log",
]

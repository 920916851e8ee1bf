"""Backends evaluate energies and forces of many isolated subclusters.

They know nothing of body orders (DESIGN.md section 6).
"""

from .ase_calculator import AseCalculatorBackend
from .base import Backend, ClusterBatch
from .metatomic import MetatomicBackend

__all__ = ["AseCalculatorBackend", "Backend", "ClusterBatch", "MetatomicBackend"]

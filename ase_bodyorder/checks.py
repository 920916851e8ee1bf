"""Start-up probes: is the model local within the cutoff, and can it be packed?

Both compare a few tiny clusters evaluated separately and together; they cost a
handful of model calls and catch the cases where the expansion would silently be wrong
(docs/design.md, Locality).
"""

from __future__ import annotations

import numpy as np

from .errors import LocalityError  # noqa: F401 (re-exported)
from .backends.base import Backend, ClusterBatch

__all__ = ["LocalityError", "check_locality"]


def _energy(backend: Backend, numbers: np.ndarray, positions: np.ndarray) -> float:
    return float(backend.evaluate(ClusterBatch.from_clusters([(numbers, positions)]), forces=False)[0][0])


def _tolerance(backend: Backend, scale: float) -> float:
    relative = 1e-9 if backend.dtype == "float64" else 2e-5
    return max(1e-8, relative * max(1.0, abs(scale)) * 10)


def check_locality(backend: Backend, numbers: np.ndarray, cutoff: float) -> None:
    """Raise :class:`LocalityError` if fragments just beyond ``cutoff`` interact, or if
    packing several clusters into one evaluation changes their energies."""
    # fragment A: one atom of each species in a chain; B: the same chain reversed,
    # placed so that the closest atoms of A and B are `distance` apart
    species = np.array(sorted(set(np.asarray(numbers).tolist()))[:4])
    chain = np.zeros((len(species), 3))
    chain[:, 1] = 0.9 * np.arange(len(species))
    probes = []
    for distance in (1.01 * cutoff + 1e-3, 2.0 * cutoff):
        probes.append((species, chain, species[::-1], chain + [distance, 0.0, 0.0]))

    for na, pa, nb, pb in probes:
        combined_numbers = np.concatenate([na, nb])
        combined = _energy(backend, combined_numbers, np.concatenate([pa, pb]))
        separate = _energy(backend, na, pa) + _energy(backend, nb, pb)
        gap = np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1))
        if abs(combined - separate) > _tolerance(backend, combined):
            raise LocalityError(
                f"the model is not local within cutoff={cutoff:.4g} A: two fragments "
                f"{gap:.3f} A apart interact, E(A+B) - E(A) - E(B) = "
                f"{combined - separate:.3e} eV. Give the cutoff the model really "
                "uses (for message passing, one layer's cutoff; by default the model's own), "
                "or every subset (cutoff None, 'all' on the command line: exact for any model, "
                "combinatorial cost)."
            )

    if backend.packed:
        # the same clusters, overlapping in space, evaluated in one call and one by one
        na, pa, nb, pb = probes[0]
        clusters = [(na, pa), (nb, pa + 0.3), (np.concatenate([na, nb]), np.concatenate([pa, pb]))]
        together = backend.evaluate(ClusterBatch.from_clusters(clusters), forces=False)[0]
        alone = np.array([_energy(backend, n, p) for n, p in clusters])
        if np.any(np.abs(together - alone) > _tolerance(backend, np.abs(alone).max())):
            raise LocalityError(
                "evaluating several subclusters packed in one system changes their "
                f"energies (by up to {np.abs(together - alone).max():.3e} eV): the model "
                "uses more than its neighbour lists, so it cannot be packed"
            )

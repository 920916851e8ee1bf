"""What every backend shares: the batch of subclusters, chunking, the backend contract.

No torch here: the ASE-calculator backend and everything that only reads logs must
import without it.

A backend evaluates the energies (and forces) of many small isolated clusters. It knows
nothing of body orders or coefficients (docs/design.md, Plan, evaluate, assemble).
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass

import ase
import numpy as np

from ..errors import InputError

__all__ = ["Backend", "ClusterBatch", "file_sha256", "torch_device"]


@dataclass
class ClusterBatch:
    """Many isolated, non-periodic clusters stored one after the other.

    The atoms of cluster ``m`` are ``ptr[m]:ptr[m+1]`` of ``positions`` (angstrom) and
    ``numbers`` (atomic numbers).
    """

    positions: np.ndarray  # (P, 3) float64
    numbers: np.ndarray  # (P,) int
    ptr: np.ndarray  # (M + 1,) int

    @classmethod
    def from_clusters(cls, clusters) -> "ClusterBatch":
        """One batch of ``clusters``, a sequence of (atomic numbers, positions) pairs."""
        clusters = list(clusters)
        return cls(
            positions=np.concatenate([np.reshape(p, (-1, 3)) for _, p in clusters]).astype(np.float64),
            numbers=np.concatenate([np.asarray(n) for n, _ in clusters]).astype(np.int64),
            ptr=np.concatenate([[0], np.cumsum([len(n) for n, _ in clusters])]).astype(np.int64),
        )

    @classmethod
    def isolated_atoms(cls, species) -> "ClusterBatch":
        """One single-atom cluster per atomic number in ``species``."""
        species = np.asarray(list(species), dtype=np.int64)
        return cls(np.zeros((len(species), 3)), species, np.arange(len(species) + 1))

    @property
    def n_clusters(self) -> int:
        return len(self.ptr) - 1

    @property
    def n_atoms(self) -> int:
        return int(self.ptr[-1])

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.ptr)

    def cluster_of_atom(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_clusters), self.sizes)

    def slice(self, first: int, last: int) -> "ClusterBatch":
        """Clusters first..last-1 as their own batch."""
        a, b = self.ptr[first], self.ptr[last]
        return ClusterBatch(self.positions[a:b], self.numbers[a:b], self.ptr[first : last + 1] - a)

    def chunks(self, max_atoms: int):
        """Split into consecutive batches of at most ``max_atoms`` atoms (at least one
        cluster each), yielding ``(first_cluster, batch)``."""
        first = 0
        while first < self.n_clusters:
            limit = self.ptr[first] + max(max_atoms, 1)
            last = int(np.searchsorted(self.ptr, limit, side="right")) - 1
            last = min(max(last, first + 1), self.n_clusters)
            yield first, self.slice(first, last)
            first = last


class Backend(abc.ABC):
    """Evaluates energies and forces of isolated clusters, and of the plain model."""

    #: the locality radius the model implies (angstrom), or None if it cannot tell
    default_cutoff: float | None = None
    #: the floating-point type the model computes in ("float32" or "float64")
    dtype: str = "float64"
    #: whether the backend evaluates many clusters in one model call
    packed: bool = False
    #: whether it can give forces (a batched function may give energies only)
    gives_forces: bool = True
    #: atoms per model call when the user sets no bound (memory against call overhead)
    preferred_chunk_atoms: int = 16384

    #: atomic numbers the model handles (None: any)
    atomic_types: list[int] | None = None
    #: how errors name the model
    display_name: str = "the model"

    def check_species(self, numbers: np.ndarray) -> None:
        """Raise ValueError naming any atomic number the model cannot handle."""
        if self.atomic_types is None:
            return
        unknown = sorted(set(np.unique(numbers).tolist()) - set(self.atomic_types))
        if unknown:
            import ase.data

            symbols = [ase.data.chemical_symbols[z] for z in unknown]
            types = self.atomic_types
            handled = (f"atomic numbers {types}" if len(types) <= 12
                       else f"{len(types)} elements up to Z = {max(types)}")
            raise InputError(
                f"species {symbols} (atomic numbers {unknown}) are not known to {self.display_name}, "
                f"which handles {handled}"
            )

    @abc.abstractmethod
    def evaluate(
        self, batch: ClusterBatch, forces: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Energies (eV, float64, one per cluster) and, if asked, the force on every
        atom of the batch within its own cluster (eV/A, float64, shape (P, 3))."""

    def chunk_atoms(self, n_atoms: int, max_atoms: int) -> int:
        """Atoms per chunk for a batch of ``n_atoms`` given the bound ``max_atoms``
        (a distributed backend cuts finer, so that every worker gets work)."""
        return max_atoms

    def evaluate_chunks(self, chunks: list[ClusterBatch], forces: bool):
        """:meth:`evaluate` of every chunk, in order (here one after the other, lazily,
        so that only one chunk's intermediate results are alive at a time)."""
        return (self.evaluate(chunk, forces) for chunk in chunks)

    @abc.abstractmethod
    def evaluate_full(self, atoms: ase.Atoms, forces: bool, stress: bool) -> dict:
        """The plain model on the whole system (periodic if it is): a dict with
        ``energy`` and, if asked, ``forces`` and ``stress`` (3x3, eV/A^3)."""

    def describe(self) -> dict:
        """Metadata to record in logs: what model, which dtype."""
        return {"backend": type(self).__name__, "dtype": self.dtype}


def file_sha256(path) -> str:
    """SHA-256 of a model file, as logs record it to name the exact weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def torch_device(device: str | None):
    """The torch device asked for (default cpu), refused in one line when this machine
    has none of that kind (torch is imported only here, when a backend needs it)."""
    import torch

    try:
        chosen = torch.device(device or "cpu")
    except RuntimeError as error:
        raise InputError(f"device {device!r}: {error}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: no CUDA device is available on this machine")
    return chosen

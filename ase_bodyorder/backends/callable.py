"""Bring your own batched model: a Python function that evaluates many isolated
clusters in one call, as a backend.

A model with a batch API of its own (a list of structures in, their energies out) gets
the packed speed of the built-in backends without a backend written for it: the
function receives every subcluster of a chunk at once, as a list of isolated,
non-periodic ``ase.Atoms`` (docs/universal.md, "Your own batched model").

What the function must return, for a list of M clusters:

- energies only (``forces=False``): M energies in eV, anything ``numpy.asarray`` turns
  into shape (M,) (a list, a numpy array, a CPU torch tensor without grad);
- with forces (``forces=True``, the default): a pair ``(energies, forces)``, the forces
  in eV/A either as one array of shape (n_1 + ... + n_M, 3), the clusters' atoms one
  cluster after the other in the order given, or as a list (or tuple) of M arrays of
  shape (n_i, 3). Only a ``list`` or ``tuple`` is read as one array per cluster.

Whatever comes back is checked (count, shape, finiteness) and a wrong one refused with
an :class:`~ase_bodyorder.errors.InputError` that names the problem. No torch here.
"""

from __future__ import annotations

import ase
import numpy as np

from ..errors import InputError
from .base import Backend, ClusterBatch

__all__ = ["BatchedCallableBackend", "is_batched_function"]


def is_batched_function(model) -> bool:
    """Whether ``model`` is taken as a batched function when given bare as a model: a
    callable that is not a class, a torch module (a loaded metatomic or CHGNet model
    is callable too) or an ASE calculator."""
    if isinstance(model, type) or not callable(model):
        return False
    if hasattr(model, "get_potential_energy"):  # an ASE calculator with __call__
        return False
    # torch.nn.Module (and TorchScript modules) without importing torch
    return not any(cls.__module__.split(".")[0] == "torch" for cls in type(model).__mro__)


class BatchedCallableBackend(Backend):
    """A batched Python function as a packed backend.

    :param function: ``function(clusters: list[ase.Atoms])`` returning the energies of
        the clusters (``forces=False``) or ``(energies, forces)`` (``forces=True``);
        see the module documentation for the exact shapes. Each cluster is an isolated
        non-periodic ``ase.Atoms`` (no cell, ``pbc=False``), made fresh for each call.
    :param cutoff: the model's locality radius in angstrom (for a message-passing model,
        one layer's cutoff: docs/design.md, Locality), which the expansion needs; it
        becomes the calculator's default ``cutoff``. ``None`` says the function does not
        tell: the calculator then needs ``cutoff=`` given, as for an ASE calculator.
    :param forces: whether the function returns forces. Without them, forces and stress
        are refused (energies, ``decompose`` and ``curves`` work).
    :param name: how logs and output name the model (default: the function's name)
    :param dtype: the precision the model computes in, ``"float64"`` or ``"float32"``
        (the locality probe's tolerance follows it; the sums are float64 either way)

    Example, a pair potential written batched in numpy::

        calc = BodyOrderCalculator(BatchedCallableBackend(my_batched_model, cutoff=5.0), 3)
    """

    packed = True

    def __init__(
        self,
        function,
        cutoff: float | None,
        *,
        forces: bool = True,
        name: str | None = None,
        dtype: str = "float64",
    ):
        if not callable(function):
            raise InputError(f"expected a function of a list of ase.Atoms, got {type(function).__name__}")
        if cutoff is not None:
            if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.number)) or not cutoff > 0:
                raise InputError(f"cutoff must be a positive number of angstrom or None, got {cutoff!r}")
            cutoff = float(cutoff)
        if dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.function = function
        self.default_cutoff = cutoff
        self.forces = self.gives_forces = bool(forces)
        self.dtype = dtype
        self.name = name or getattr(function, "__qualname__", None) or type(function).__name__
        self.display_name = self.name

    def _call(self, clusters: list[ase.Atoms], sizes: np.ndarray, forces: bool):
        """The function on ``clusters``, its output checked: float64 energies (M,) and,
        if asked, float64 forces (sum of sizes, 3)."""
        if forces and not self.forces:
            raise InputError(
                f"{self.name} gives energies only (forces=False): forces and stress need a "
                "function that returns (energies, forces), given with forces=True"
            )
        output = self.function(clusters)
        if not self.forces:
            return _energies(output, len(clusters), self.name, energies_only=True), None
        if not isinstance(output, (tuple, list)) or len(output) != 2:
            raise InputError(
                f"{self.name} must return (energies, forces) with forces=True, got "
                f"{_what(output)}; a function that gives energies only needs forces=False"
            )
        energies = _energies(output[0], len(clusters), self.name)
        return energies, (_forces(output[1], sizes, self.name) if forces else None)

    def evaluate(self, batch: ClusterBatch, forces: bool):
        if batch.n_clusters == 0:
            return np.zeros(0), (np.zeros((0, 3)) if forces else None)
        clusters = [
            ase.Atoms(numbers=batch.numbers[a:b], positions=batch.positions[a:b], pbc=False)
            for a, b in zip(batch.ptr[:-1], batch.ptr[1:])
        ]
        return self._call(clusters, batch.sizes, forces)

    def evaluate_full(self, atoms: ase.Atoms, forces: bool, stress: bool) -> dict:
        """The function on the whole structure, which must be finite: the function is
        only ever given isolated clusters, so a periodic structure is refused."""
        if atoms.pbc.any():
            raise InputError(
                f"{self.name} evaluates isolated clusters only: the plain model of a periodic "
                "structure is not available from a batched function"
            )
        if stress:
            raise InputError("stress needs a cell periodic in all three directions")
        cluster = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, pbc=False)
        energies, f = self._call([cluster], np.array([len(atoms)]), forces)
        out = {"energy": float(energies[0])}
        if forces:
            out["forces"] = f
        return out

    def describe(self) -> dict:
        return {
            "backend": "BatchedCallableBackend",
            "model": self.name,
            "dtype": self.dtype,
            "forces": self.forces,
            "packed": True,
        }


def _what(value) -> str:
    """A short description of a returned value, for error messages."""
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{article} {kind} of shape {tuple(shape)}"
    if isinstance(value, (tuple, list)):
        return f"{article} {kind} of {len(value)} items"
    return f"{article} {kind}"


def _clusters(count: int) -> str:
    return f"{count} cluster" + ("" if count == 1 else "s")


def _energies(value, count: int, name: str, energies_only: bool = False) -> np.ndarray:
    hint = " (with forces=False the function returns the energies alone)" if energies_only else ""
    try:
        energies = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"{name} returned energies that are not numbers ({_what(value)}: {error}){hint}") from None
    if value is None:
        raise InputError(f"{name} returned None: expected one energy per cluster, shape ({count},){hint}")
    if energies.shape != (count,):
        raise InputError(
            f"{name} returned energies of shape {energies.shape} for {_clusters(count)}: "
            f"expected one energy per cluster, shape ({count},){hint}"
        )
    bad = np.flatnonzero(~np.isfinite(energies))
    if bad.size:
        raise InputError(f"{name} returned a non-finite energy ({energies[bad[0]]}) for cluster {bad[0]} of {count}")
    return energies


def _forces(value, sizes: np.ndarray, name: str) -> np.ndarray:
    """The forces as one (P, 3) float64 array, from one array or a list of M arrays."""
    total = int(np.sum(sizes))
    try:
        if isinstance(value, (list, tuple)):  # one array per cluster
            if len(value) != len(sizes):
                raise InputError(
                    f"{name} returned a {type(value).__name__} of {len(value)} force arrays for "
                    f"{_clusters(len(sizes))}: expected one (n_atoms, 3) array per cluster, or one "
                    f"array of shape ({total}, 3)"
                )
            parts = [np.asarray(f, dtype=np.float64) for f in value]
            for m, (part, n) in enumerate(zip(parts, sizes)):
                if part.shape != (n, 3):
                    raise InputError(
                        f"{name} returned forces of shape {part.shape} for cluster {m}, which has "
                        f"{n} atoms: expected ({n}, 3)"
                    )
            forces = np.concatenate(parts) if parts else np.zeros((0, 3))
        else:
            forces = np.asarray(value, dtype=np.float64)
            if forces.shape != (total, 3):
                raise InputError(
                    f"{name} returned forces of shape {forces.shape} for {_clusters(len(sizes))} of "
                    f"{total} atoms in all: expected ({total}, 3), or a list of one (n_atoms, 3) "
                    "array per cluster"
                )
    except (TypeError, ValueError, RuntimeError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{name} returned forces that are not numbers ({_what(value)}: {error})") from None
    bad = np.flatnonzero(~np.isfinite(forces).all(axis=1))
    if bad.size:
        cluster = int(np.searchsorted(np.cumsum(sizes), bad[0], side="right"))
        raise InputError(f"{name} returned non-finite forces for cluster {cluster} of {len(sizes)}")
    return forces

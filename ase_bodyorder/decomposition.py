"""Every body order's contribution for one structure, in one pass."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import ase
import numpy as np

from .errors import InputError
from .calculator import MODEL_CUTOFF, BodyOrderCalculator

__all__ = ["Decomposition", "decompose"]


@dataclass
class Decomposition:
    """The many-body decomposition of one structure (eV).

    The names are those of :class:`~ase_bodyorder.BodyOrderCalculator`'s ``results``:
    ``body_order_energies[k-1]`` is dE_k, ``truncated_energies[k-1]`` is E^(k),
    ``per_atom_body_order_energies[:, k-1]`` shares dE_k over atoms (each eps(S) split
    equally among the atoms of S), ``subcluster_counts[k-1]`` is the number of connected
    k-body subsets. With the plain model evaluated, ``full_energy`` is E and
    ``remainder`` is E - E^(K). ``per_atom`` and ``counts`` are the earlier names of
    two of them, kept so that code written against them still runs.
    """

    max_order: int
    body_order_energies: np.ndarray
    truncated_energies: np.ndarray
    per_atom_body_order_energies: np.ndarray
    subcluster_counts: np.ndarray
    full_energy: float | None = None

    @property
    def per_atom(self) -> np.ndarray:
        """The earlier name of ``per_atom_body_order_energies``."""
        return self.per_atom_body_order_energies

    @property
    def counts(self) -> np.ndarray:
        """The earlier name of ``subcluster_counts``."""
        return self.subcluster_counts

    @property
    def remainder(self) -> float | None:
        if self.full_energy is None:
            return None
        return self.full_energy - float(self.truncated_energies[-1])

    def as_dict(self) -> dict:
        """Plain lists and numbers, for JSON."""
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        out["remainder"] = self.remainder
        return out


def decompose(
    atoms: ase.Atoms,
    model,
    max_order: int,
    *,
    full_model: bool = False,
    cutoff=MODEL_CUTOFF,
    fragments=None,
    calculator: BodyOrderCalculator | None = None,
    **kwargs,
) -> Decomposition:
    """Decompose the model's energy of ``atoms`` over body orders 1..max_order.

    :param model: as for :class:`BodyOrderCalculator` (ignored when ``calculator`` is
        given, which lets many structures reuse one loaded model)
    :param full_model: also evaluate the plain model, giving ``full_energy`` and the
        ``remainder`` E - E^(K)
    """
    if calculator is None:
        calculator = BodyOrderCalculator(
            model, max_order, cutoff=cutoff, fragments=fragments, **kwargs
        )
    elif calculator.max_order != max_order:
        raise InputError(
            f"calculator truncates at K={calculator.max_order}, asked for K={max_order}"
        )
    atoms = atoms.copy()
    r = calculator.compute_many([atoms], forces=False)[0]  # energies only
    full = None
    if full_model:
        full = float(calculator.backend.evaluate_full(atoms, forces=False, stress=False)["energy"])
    return Decomposition(
        max_order=max_order,
        body_order_energies=r["body_order_energies"].copy(),
        truncated_energies=r["truncated_energies"].copy(),
        per_atom_body_order_energies=r["per_atom_body_order_energies"].copy(),
        subcluster_counts=r["subcluster_counts"].copy(),
        full_energy=full,
    )

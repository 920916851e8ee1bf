"""Any ASE calculator as a backend: one subcluster at a time (no batching possible)."""

from __future__ import annotations

import ase
import numpy as np
from ase.calculators.calculator import BaseCalculator

from .base import Backend, ClusterBatch

__all__ = ["AseCalculatorBackend"]


class AseCalculatorBackend(Backend):
    """Evaluates each subcluster as its own non-periodic ``ase.Atoms``.

    The calculator must give the energy of an isolated (non-periodic) cluster; the user
    must give the locality cutoff, since an ASE calculator does not report one.
    """

    packed = False

    def __init__(self, calculator: BaseCalculator):
        # any ASE calculator: Calculator subclasses and the others (SumCalculator,
        # LinearCombinationCalculator, ...) share BaseCalculator
        if not isinstance(calculator, BaseCalculator) and not hasattr(calculator, "get_potential_energy"):
            raise TypeError(f"expected an ASE calculator, got {type(calculator).__name__}")
        self.calculator = calculator
        self.default_cutoff = None
        self.dtype = "float64"

    def evaluate(self, batch: ClusterBatch, forces: bool):
        energies = np.empty(batch.n_clusters)
        all_forces = np.zeros((batch.n_atoms, 3)) if forces else None
        for m in range(batch.n_clusters):
            a, b = batch.ptr[m], batch.ptr[m + 1]
            cluster = ase.Atoms(numbers=batch.numbers[a:b], positions=batch.positions[a:b], pbc=False)
            cluster.calc = self.calculator
            energies[m] = cluster.get_potential_energy()
            if forces:
                all_forces[a:b] = cluster.get_forces()
        return energies, all_forces

    def evaluate_full(self, atoms: ase.Atoms, forces: bool, stress: bool) -> dict:
        copy = atoms.copy()
        copy.calc = self.calculator
        results = {"energy": copy.get_potential_energy()}
        if "energies" in getattr(self.calculator, "implemented_properties", []):
            results["energies"] = copy.get_potential_energies()
        if forces:
            results["forces"] = copy.get_forces()
        if stress:
            from ase.stress import voigt_6_to_full_3x3_stress

            results["stress"] = voigt_6_to_full_3x3_stress(copy.get_stress())
        return results

    def describe(self) -> dict:
        return {"backend": "AseCalculatorBackend", "dtype": self.dtype, "model": type(self.calculator).__name__}

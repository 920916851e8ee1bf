"""FCI/STO-3G for hydrogen clusters (PySCF), as functions and as an ASE calculator.

The one FCI code path of the project: the reference data (scripts/generate_fci_references.py)
and the ``compare`` analysis both use it. Needs PySCF (the ``fci`` extra, also in
``train`` and ``test``); imported lazily.

The ground state over spin states is the lowest root of the lowest Sz sector
(2 Sz = n mod 2), which contains every spin state. FCI is computed as CASSCF with every
orbital active (orbital rotations are then redundant, so the CASSCF energy and analytic
gradient are the FCI ones).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .errors import InputError

__all__ = ["FCICalculator", "SOLVER_SETTINGS", "fci_energy", "fci_energy_forces", "fci_lowest_energies"]

#: how every FCI/STO-3G number of the project is computed (recorded in data/fci_settings.json)
SOLVER_SETTINGS = {
    "seed": 20261121,
    "basis": "sto-3g",
    "casscf_max_macro": 10,
    "fallback_roots": 3,
    "exact_ci_max_determinants": 1500,
    # 8-atom clusters (4900 determinants) keep the faster Davidson-based CASSCF, which
    # landed 68 of 1120 on an excited state (up to 0.32 eV high); each label is checked
    # against the lowest eigenvalue of the whole CI Hamiltonian by Lanczos from a random
    # start (1-3 s; an earlier check with Davidson roots from the HF determinants missed
    # states of another symmetry) and, if it is higher by more than the tolerance,
    # redone by diagonalising the whole CI space (about 23 s)
    "root_check": {"method": "lanczos, random start", "tolerance_meV": 0.1, "max_determinants": 5000},
}
SETTINGS = SOLVER_SETTINGS

HARTREE_EV = 27.211386245988  # CODATA 2018, as in ase.units
BOHR_A = 0.529177210903


def _molecule(positions: np.ndarray):
    _require_pyscf()
    from pyscf import gto, lib

    lib.num_threads(1)
    n = len(positions)
    return gto.M(
        atom=[("H", tuple(p)) for p in positions],
        basis=SETTINGS["basis"],
        spin=n % 2,
        unit="Angstrom",
        verbose=0,
    )


def _ci_dimension(mol) -> int:
    """How many determinants the CI space of ``mol`` (all orbitals active) has."""
    from math import comb

    return comb(mol.nao, mol.nelec[0]) * comb(mol.nao, mol.nelec[1])


def _exact_ci(fcisolver, mol, limit: int | None = None) -> bool:
    """Diagonalise the whole CI space where it has at most 1500 determinants (every
    cluster of up to 7 atoms) instead of Davidson from a guess, which for 7-atom
    clusters could land on an excited state (up to 1 eV above the ground state).
    Returns whether it will. ``limit`` raises the 1500 (8 atoms, 4900 determinants,
    take about 23 s each)."""
    dimension = _ci_dimension(mol)
    if dimension > (limit or SETTINGS["exact_ci_max_determinants"]):
        return False
    fcisolver.pspace_size = dimension
    return True


def fci_energy_forces(positions: np.ndarray) -> tuple[float, np.ndarray]:
    """FCI/STO-3G energy (eV) and forces (eV/A) of a hydrogen cluster (A).

    Odd electron counts up to 7 atoms: the whole CI space diagonalised once (see
    ``_exact_ci``) with the CASSCF gradient. Otherwise all-active CASSCF (capped macro
    iterations; up to 6 atoms PySCF's default 400-determinant space already makes each
    CI step exact). Stretched, low-density clusters have nearly degenerate states on
    which a one-root solver can stall or land on an excited state; there (even electron
    counts) CASCI with several roots and the gradient of the lowest is used instead.
    Where the CI space is too large to diagonalise every time (8 atoms), the result is
    checked against a few Davidson roots and redone exactly if it is an excited state.
    """
    from pyscf import mcscf, scf

    mol = _molecule(positions)
    n = len(positions)
    if n == 1:
        # one electron: ROHF is exact, and a lone atom feels no force
        return float(scf.ROHF(mol).kernel()) * HARTREE_EV, np.zeros((1, 3))
    mf = scf.RHF(mol) if n % 2 == 0 else scf.ROHF(mol)
    mf.conv_tol = 1e-12
    mf.kernel()
    mc = mcscf.CASSCF(mf, mol.nao, mol.nelec)
    mc.conv_tol = 1e-11
    mc.max_cycle_macro = SETTINGS["casscf_max_macro"]
    mc.fcisolver.conv_tol = 1e-12
    if n % 2 and _exact_ci(mc.fcisolver, mol):
        return _exact_energy_forces(mc, mf)
    energy = mc.kernel()[0]
    if mc.converged or n % 2:
        gradient = mc.nuc_grad_method().kernel()
    else:
        ci = mcscf.CASCI(mf, mol.nao, mol.nelec)
        ci.fcisolver.conv_tol = 1e-12
        ci.fcisolver.nroots = SETTINGS["fallback_roots"]
        energies = ci.kernel()[0]
        state = int(np.argmin(energies))
        energy = energies[state]
        gradient = ci.nuc_grad_method().kernel(state=state)
    check = SETTINGS["root_check"]
    too_large = _ci_dimension(mol) > SETTINGS["exact_ci_max_determinants"]
    if too_large and energy * HARTREE_EV - _lowest_eigenvalue(mf) > check["tolerance_meV"] / 1000:
        # an excited state: redo it exactly (not an assert: it sets the solver up)
        if not _exact_ci(mc.fcisolver, mol, limit=check["max_determinants"]):
            raise RuntimeError(f"CI space of {_ci_dimension(mol)} determinants is over root_check's max_determinants")
        return _exact_energy_forces(mc, mf)
    return float(energy) * HARTREE_EV, -np.asarray(gradient) * HARTREE_EV / BOHR_A


def _exact_energy_forces(mc, mf) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/A) of the lowest state, with the whole CI space
    diagonalised once (``_exact_ci`` must have set it up). With every orbital active
    the energy does not depend on the orbitals, so they need no optimisation and the
    CASSCF gradient applies as it is (checked against finite differences)."""
    # no start vector: PySCF diagonalises the whole space only without one, and one left
    # by an earlier CASSCF run would lead Davidson back to the state it found
    mc.ci = None
    mc.e_tot, _, mc.ci = mc.casci(mf.mo_coeff, ci0=None)[:3]
    mc.mo_coeff, mc.converged = mf.mo_coeff, True
    gradient = mc.nuc_grad_method().kernel()
    return float(mc.e_tot) * HARTREE_EV, -np.asarray(gradient) * HARTREE_EV / BOHR_A


def _lowest_eigenvalue(mf) -> float:
    """The lowest eigenvalue (eV) of the whole CI Hamiltonian, by Lanczos (SciPy's
    ``eigsh``) from a random start vector: a cheap (1-3 s for 8 atoms) check that a label
    is on the ground state. A random start overlaps every state; Davidson started from
    the HF determinants (the earlier check) does not reach states of another spin or
    spatial symmetry, and missed two 8-atom labels (0.61 and 0.11 meV high)."""
    from pyscf import ao2mo, fci
    from scipy.sparse.linalg import LinearOperator, eigsh

    mol, orbitals = mf.mol, mf.mo_coeff
    norb, nelec = orbitals.shape[1], mol.nelec
    h1 = orbitals.T @ mf.get_hcore() @ orbitals
    eri = ao2mo.restore(1, ao2mo.kernel(mol, orbitals), norb)
    h2 = fci.direct_spin1.absorb_h1e(h1, eri, norb, nelec, 0.5)
    shape = (fci.cistring.num_strings(norb, nelec[0]), fci.cistring.num_strings(norb, nelec[1]))
    size = shape[0] * shape[1]
    hamiltonian = LinearOperator(
        (size, size), matvec=lambda v: fci.direct_spin1.contract_2e(h2, v.reshape(shape), norb, nelec).ravel(), dtype=float
    )
    start = np.random.default_rng(SETTINGS["seed"]).standard_normal(size)
    lowest = eigsh(hamiltonian, k=1, which="SA", v0=start, tol=1e-13, return_eigenvectors=False).min()
    return float(lowest + mol.energy_nuc()) * HARTREE_EV


def fci_energy(positions: np.ndarray) -> float:
    """FCI/STO-3G energy (eV), the lowest of several roots (no gradient needed)."""
    return float(fci_lowest_energies(positions, min(SETTINGS["fallback_roots"], 2 ** len(positions)))[0])


def fci_lowest_energies(positions: np.ndarray, nroots: int) -> np.ndarray:
    """The ``nroots`` lowest FCI/STO-3G energies (eV) of the lowest Sz sector, so over all
    spin states, ascending; the whole CI space is diagonalised (up to 5000 determinants)."""
    from pyscf import fci, scf

    mol = _molecule(positions)
    if len(positions) == 1:
        return np.array([float(scf.ROHF(mol).kernel()) * HARTREE_EV])
    mf = scf.RHF(mol) if len(positions) % 2 == 0 else scf.ROHF(mol)
    mf.conv_tol = 1e-12
    mf.kernel()
    solver = fci.FCI(mol, mf.mo_coeff)
    solver.conv_tol = 1e-12
    _exact_ci(solver, mol, limit=5000)
    solver.nroots = nroots
    return np.sort(np.atleast_1d(solver.kernel()[0])) * HARTREE_EV



def _require_pyscf() -> None:
    try:
        import pyscf  # noqa: F401
    except ImportError:
        raise ImportError("FCI references need PySCF: pip install pyscf (the 'fci' extra: pip install 'ase-bodyorder[fci]')") from None


def _check_hydrogen(atoms) -> None:
    other = sorted(set(atoms.get_chemical_symbols()) - {"H"})
    if other:
        raise InputError(f"FCICalculator handles hydrogen clusters only, got {other}")
    if atoms.pbc.any():
        raise InputError("FCICalculator handles isolated clusters only (pbc must be False)")


class FCICalculator(Calculator):
    """FCI/STO-3G energy (eV) and forces (eV/A) of an isolated hydrogen cluster:
    the ground state over spin states, as the shipped models' training data.

    ``energy`` alone diagonalises the whole CI space (up to 8 atoms); with ``forces`` it
    is the analytic CASSCF gradient of the ground state (:func:`fci_energy_forces`).
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    #: names the method in caches of reference energies
    method = "FCI/STO-3G (PySCF), lowest Sz sector"

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        _check_hydrogen(self.atoms)
        positions = self.atoms.positions.copy()
        if "forces" in properties:
            energy, forces = fci_energy_forces(positions)
            self.results["forces"] = forces
        else:
            energy = fci_energy(positions)
        self.results["energy"] = self.results["free_energy"] = energy

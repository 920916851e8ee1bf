"""Check that FCI labels are on the ground state: each label's energy against the lowest
eigenvalue of the whole CI Hamiltonian by Lanczos from a random start (the generator's
own check, ``_lowest_eigenvalue``), for the clusters of the given sizes.

Usage: python scripts/check_fci_labels.py [--pool data/fci_h_clusters.extxyz] [--sizes 8]
           [--tolerance-meV 0.1]
Prints one line per label above the tolerance, then a summary; exits 1 if there was any.
About 1-3 s per 8-atom cluster on one core (1320 in about an hour).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ase.io
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_fci_references import _lowest_eigenvalue, _molecule  # noqa: E402


def ground_state_energy(positions: np.ndarray) -> float:
    """The lowest FCI/STO-3G energy (eV) of a hydrogen cluster of two or more atoms."""
    from pyscf import scf

    mol = _molecule(positions)
    mf = scf.RHF(mol) if len(positions) % 2 == 0 else scf.ROHF(mol)
    mf.conv_tol = 1e-12
    mf.kernel()
    return _lowest_eigenvalue(mf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=Path("data/fci_h_clusters.extxyz"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--tolerance-meV", type=float, default=0.1)
    args = parser.parse_args()
    differences = []
    for index, atoms in enumerate(ase.io.read(args.pool, ":")):
        if len(atoms) not in args.sizes:
            continue
        above = 1000 * (atoms.get_potential_energy() - ground_state_energy(atoms.positions))
        differences.append(above)
        if above > args.tolerance_meV:
            print(f"structure {index} ({atoms.info['split']}): {above:.3f} meV above the ground state", flush=True)
    differences = np.array(differences)
    bad = int((differences > args.tolerance_meV).sum())
    print(f"{len(differences)} labels checked: {bad} above the ground state by more than "
          f"{args.tolerance_meV} meV; label - ground state from {differences.min():.2e} to {differences.max():.2e} meV")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

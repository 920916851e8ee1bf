"""Generate FCI/STO-3G reference data for hydrogen clusters (reproducible).

Energies and analytic forces come from PySCF: FCI through CASSCF with every orbital
active (orbital rotations are then redundant, so the CASSCF energy is the FCI energy and
its analytic gradient is the FCI gradient). The ground state over spin states is the
lowest root of the lowest Sz sector (2 Sz = n mod 2), which contains every spin state.

Writes, into --out (default data/):
- ``fci_h_clusters.extxyz``: the training pool, one frame per structure, with
  ``energy`` (eV) in ``info`` and ``forces`` (eV/A) in ``arrays``, plus ``set``,
  ``density`` and ``split`` (train/val/test) tags;
- ``fci_mbe_reference.json``: for a few test clusters, the FCI energy of every
  subcluster (the exact many-body expansion of the reference);
- ``fci_settings.json``: every setting and seed used.

Usage: python scripts/generate_fci_references.py [--out data] [--workers 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "seed": 20261121,
    "basis": "sto-3g",
    "method": "FCI via all-active CASSCF (PySCF), lowest Sz sector",
    "min_distance": 0.6,  # A, for clusters
    "cluster_sizes": [3, 4, 5, 6, 7, 8],
    "clusters_per_size_and_density": 220,
    "densities": {"low": [0.02, 0.05], "high": [0.1, 0.2]},  # atoms / A^3
    "n_dimers": 320,
    "dimer_range": [0.5, 4.0],  # A
    "split_fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
    "mbe_clusters": {"size": 8, "per_density": 4},
}

HARTREE_EV = 27.211386245988  # CODATA 2018, as in ase.units
BOHR_A = 0.529177210903


def fci_energy_forces(positions: np.ndarray) -> tuple[float, np.ndarray]:
    """FCI/STO-3G energy (eV) and forces (eV/A) of a hydrogen cluster (A)."""
    from pyscf import gto, lib, mcscf, scf

    lib.num_threads(1)
    n = len(positions)
    mol = gto.M(
        atom=[("H", tuple(p)) for p in positions],
        basis=SETTINGS["basis"],
        spin=n % 2,
        unit="Angstrom",
        verbose=0,
    )
    if n == 1:
        # one electron: ROHF is exact, and a lone atom feels no force
        return float(scf.ROHF(mol).kernel()) * HARTREE_EV, np.zeros((1, 3))
    mf = scf.RHF(mol) if n % 2 == 0 else scf.ROHF(mol)
    mf.conv_tol = 1e-12
    mf.kernel()
    mc = mcscf.CASSCF(mf, mol.nao, mol.nelec)
    mc.conv_tol = 1e-11
    mc.fcisolver.conv_tol = 1e-12
    energy = mc.kernel()[0]
    gradient = mc.nuc_grad_method().kernel()
    return float(energy) * HARTREE_EV, -np.asarray(gradient) * HARTREE_EV / BOHR_A


def fci_energy(positions: np.ndarray) -> float:
    return fci_energy_forces(positions)[0]


def random_cluster(rng: np.random.Generator, n: int, density: float) -> np.ndarray:
    """n points uniform in a sphere of volume n/density, pairwise >= min_distance."""
    radius = (3.0 * n / (4.0 * np.pi * density)) ** (1.0 / 3.0)
    while True:
        points: list[np.ndarray] = []
        for _ in range(1000 * n):
            p = rng.uniform(-radius, radius, 3)
            if p @ p > radius**2:
                continue
            if all(np.linalg.norm(p - q) >= SETTINGS["min_distance"] for q in points):
                points.append(p)
                if len(points) == n:
                    pos = np.array(points)
                    return pos - pos.mean(axis=0)


def build_structures() -> list[dict]:
    rng = np.random.default_rng(SETTINGS["seed"])
    structures = [{"set": "atom", "density": 0.0, "positions": np.zeros((1, 3))}]
    lo, hi = SETTINGS["dimer_range"]
    for d in rng.uniform(lo, hi, SETTINGS["n_dimers"]):
        structures.append(
            {"set": "dimer", "density": 0.0, "positions": np.array([[0, 0, 0], [0, 0, d]])}
        )
    for name, (dlo, dhi) in SETTINGS["densities"].items():
        for n in SETTINGS["cluster_sizes"]:
            for _ in range(SETTINGS["clusters_per_size_and_density"]):
                density = rng.uniform(dlo, dhi)
                structures.append(
                    {
                        "set": f"cluster_{name}",
                        "density": density,
                        "positions": random_cluster(rng, n, density),
                    }
                )
    # splits: the atom and every dimer train; clusters split at random
    fractions = SETTINGS["split_fractions"]
    for s in structures:
        if s["set"] in ("atom", "dimer"):
            s["split"] = "train"
        else:
            u = rng.uniform()
            s["split"] = (
                "train"
                if u < fractions["train"]
                else ("val" if u < fractions["train"] + fractions["val"] else "test")
            )
    return structures


def _label(structure: dict) -> dict:
    energy, forces = fci_energy_forces(structure["positions"])
    return {**structure, "energy": energy, "forces": forces}


def _subcluster_energies(positions: np.ndarray) -> dict:
    n = len(positions)
    energies = {}
    for k in range(1, n + 1):
        for subset in itertools.combinations(range(n), k):
            energies[",".join(map(str, subset))] = fci_energy(positions[list(subset)])
    return energies


def main() -> None:
    import ase
    import ase.io

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    structures = build_structures()
    start = time.time()
    with multiprocessing.Pool(args.workers) as pool:
        labelled = pool.map(_label, structures, chunksize=8)
    print(f"labelled {len(labelled)} structures in {time.time() - start:.0f} s", flush=True)

    frames = []
    for s in labelled:
        atoms = ase.Atoms("H" * len(s["positions"]), positions=s["positions"])
        atoms.info.update(
            energy=s["energy"], set=s["set"], density=float(s["density"]), split=s["split"]
        )
        atoms.arrays["forces"] = s["forces"]
        frames.append(atoms)
    ase.io.write(args.out / "fci_h_clusters.extxyz", frames, format="extxyz")

    # exact MBE of the reference for a few held-out clusters
    rng = np.random.default_rng(SETTINGS["seed"] + 1)
    mbe_size = SETTINGS["mbe_clusters"]["size"]
    clusters = [
        (name, random_cluster(rng, mbe_size, rng.uniform(*bounds)))
        for name, bounds in SETTINGS["densities"].items()
        for _ in range(SETTINGS["mbe_clusters"]["per_density"])
    ]
    with multiprocessing.Pool(args.workers) as pool:
        subsets = pool.map(_subcluster_energies, [pos for _, pos in clusters])
    mbe = [
        {"density": name, "positions": pos.tolist(), "energies_eV": energies}
        for (name, pos), energies in zip(clusters, subsets)
    ]
    (args.out / "fci_mbe_reference.json").write_text(json.dumps(mbe, indent=1))
    (args.out / "fci_settings.json").write_text(json.dumps(SETTINGS, indent=1))
    print(f"done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

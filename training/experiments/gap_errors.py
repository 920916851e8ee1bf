"""A model's dense errors on the held-out block's 6- and 7-atom clusters, binned by the gap
between the two lowest FCI states (README, "Shipped models").

    python training/experiments/gap_errors.py MODEL.pt [--workers 2]

The whole CI space of each cluster is diagonalised (6-8 min on two cores for the 400
clusters); the script also checks that every label is the lowest root.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
GAP_BINS_EV = ((0.0, 0.1), (0.1, 0.3), (0.3, np.inf))


def main() -> None:
    from generate_fci_references import fci_lowest_energies, first_pool_size
    from metatomic_ase import MetatomicCalculator

    from ase_bodyorder.backends.metatomic import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    pool = ase.io.read(ROOT / "data/fci_h_clusters.extxyz", ":")
    # the held-out block: the test structures after the first pool
    frames = [a for a in pool[first_pool_size() :] if a.info["split"] == "test" and len(a) in (6, 7)]
    with multiprocessing.Pool(args.workers) as pool:
        levels = np.array(pool.starmap(fci_lowest_energies, [(a.positions, 2) for a in frames], chunksize=8))
    labels = np.array([a.get_potential_energy() for a in frames])
    print(f"largest |label - lowest root|: {np.abs(levels[:, 0] - labels).max():.1e} eV")
    results = MetatomicCalculator(load_model(args.model)).compute_energy(frames, compute_forces_and_stresses=True)
    gaps = levels[:, 1] - levels[:, 0]
    for size in (6, 7):
        for low, high in GAP_BINS_EV:
            chosen = [i for i, a in enumerate(frames) if len(a) == size and low <= gaps[i] < high]
            if not chosen:
                continue
            de = np.array([(results["energy"][i] - labels[i]) / size for i in chosen])
            df = np.concatenate([(results["forces"][i] - frames[i].get_forces()).ravel() for i in chosen])
            print(
                f"{size} atoms, gap {low}-{high} eV: {len(chosen):3d} clusters, "
                f"{1000 * np.sqrt(np.mean(de**2)):5.1f} meV/atom, {np.sqrt(np.mean(df**2)):.3f} eV/A"
            )


if __name__ == "__main__":
    main()

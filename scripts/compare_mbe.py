"""Body-order contributions of the shipped models beside the exact FCI ones.

For the held-out H8 clusters of data/fci_mbe_reference.json (FCI energy of every
subcluster), compare dE_k (k = 1..8) of FCI (inclusion-exclusion over all subsets) with
each model's, computed by BodyOrderCalculator with cutoff=None (every subset, so both
sides are the same expansion).

Usage: python scripts/compare_mbe.py [--models pet-h-fci soap-bpnn-h-fci]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import ase
import numpy as np

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent


def exact_contributions(energies: dict[str, float], n: int) -> np.ndarray:
    """dE_k of FCI: the subcluster energies of the reference, keyed "i,j,...", through
    the package's own assembly (every subset: cutoff=None)."""
    from ase_bodyorder import assemble, plan_subclusters

    subclusters = plan_subclusters(ase.Atoms(f"H{n}", positions=np.zeros((n, 3))), n, cutoff=None)
    keys = [",".join(map(str, subclusters.parent[a:b])) for a, b in zip(subclusters.ptr[:-1], subclusters.ptr[1:])]
    return assemble(subclusters, [energies[key] for key in keys])["body_order_energies"]


def main() -> None:
    from ase_bodyorder import decompose, list_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list_models())
    args = parser.parse_args()
    clusters = json.loads((ROOT / "data/fci_mbe_reference.json").read_text())
    n = len(clusters[0]["positions"])
    print(f"{len(clusters)} H{n} clusters; dE_k in meV/atom, mean over clusters of each density")
    for density in ("low", "high"):
        chosen = [c for c in clusters if c["density"] == density]
        exact = np.mean([exact_contributions(c["energies_eV"], n) for c in chosen], axis=0) / n * 1000
        print(f"\n{density} density    " + " ".join(f"{'k=' + str(k):>9}" for k in range(1, n + 1)))
        print(f"{'FCI':<16}" + " ".join(f"{v:9.2f}" for v in exact))
        for name in args.models:
            model = np.mean(
                [
                    decompose(ase.Atoms(f"H{n}", positions=c["positions"]), name, n, cutoff=None).body_order_energies
                    for c in chosen
                ],
                axis=0,
            ) / n * 1000
            print(f"{name:<16}" + " ".join(f"{v:9.2f}" for v in model))


if __name__ == "__main__":
    main()

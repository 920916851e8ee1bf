"""Errors of shipped or candidate models on each part of the test (or validation) split, with bootstrap intervals.

    python training/split_errors.py MODEL.pt [MORE.pt ...] [--split val]

Parts: the first pool's held-out clusters (the split tag drawn with the first pool) and the
held-out block appended for that split (``heldout_test_clusters``: 1200 dense clusters;
``heldout_val_clusters``: 600), each by density, and the whole split (the model cards report
the whole test split). The interval is the 2.5-97.5 percentile of the RMSE over 2000
resamplings of the clusters (seed 0).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def _rmse_with_interval(squared: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """RMSE of per-cluster squared-error sums over ``counts`` values, and its bootstrap 95% interval."""
    samples = rng.integers(0, len(squared), (2000, len(squared)))
    boot = np.sqrt(squared[samples].sum(axis=1) / counts[samples].sum(axis=1))
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(np.sqrt(squared.sum() / counts.sum())), float(low), float(high)


def main() -> None:
    from generate_fci_references import first_pool_size
    from metatomic_ase import MetatomicCalculator

    from ase_bodyorder.backends.metatomic import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    args = parser.parse_args()
    pool = ase.io.read(ROOT / "data/fci_h_clusters.extxyz", ":")
    block_start = first_pool_size()  # test (val) structures after the first pool are the held-out block
    held_out = [(i, a) for i, a in enumerate(pool) if a.info["split"] == args.split]
    for path in args.models:
        calculator = MetatomicCalculator(load_model(path))
        results = calculator.compute_energy([a for _, a in held_out], compute_forces_and_stresses=True)
        print(f"{path} (energy RMSE meV/atom, force RMSE eV/A, [95% interval])")
        for part, in_part in (
            ("first pool", lambda i: i < block_start),
            (f"heldout_{args.split}_clusters", lambda i: i >= block_start),
            (f"whole {args.split} split", lambda i: True),
        ):
            for density in ("low", "high"):
                chosen = [k for k, (i, a) in enumerate(held_out) if in_part(i) and a.info["set"] == f"cluster_{density}"]
                if not chosen:
                    continue
                frames = [held_out[k][1] for k in chosen]
                sizes = np.array([len(a) for a in frames])
                de = np.array([(results["energy"][k] - a.get_potential_energy()) / len(a) for k, a in zip(chosen, frames)])
                df2 = np.array([np.sum((results["forces"][k] - a.get_forces()) ** 2) for k, a in zip(chosen, frames)])
                rng = np.random.default_rng(0)
                energy = _rmse_with_interval(1e6 * de**2, np.ones(len(chosen)), rng)
                force = _rmse_with_interval(df2, 3 * sizes, rng)
                print(
                    f"  {part:22s} {density:4s} {len(chosen):5d} clusters: "
                    f"{energy[0]:6.2f} [{energy[1]:.2f}, {energy[2]:.2f}]  {force[0]:.3f} [{force[1]:.3f}, {force[2]:.3f}]"
                )


if __name__ == "__main__":
    main()

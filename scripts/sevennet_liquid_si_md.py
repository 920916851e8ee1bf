"""A short NVT run of liquid silicon with SevenNet-0 truncated at K = 3, with the
many-body log: does the truncated model hold the liquid together?

Starts from the 64-atom SevenNet-0 melt of docs/data/l-Si.extxyz (1800 K, 2.57 g/cm^3),
Langevin at 1800 K, 1 fs steps, float32 (MD precision, docs/universal.md), and writes
docs/data/l-Si_K3.h5 (read it with `ase-bodyorder info`).

Usage: python scripts/sevennet_liquid_si_md.py [--steps 20] [--threads 2] [--overwrite]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    import ase.io
    import numpy as np
    import torch

    from ase_bodyorder import BodyOrderCalculator
    from ase_bodyorder.md import run_md

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    atoms = ase.io.read(ROOT / "docs" / "data" / "l-Si.extxyz")
    log = ROOT / "docs" / "data" / "l-Si_K3.h5"
    calc = BodyOrderCalculator("sevennet-0", 3, dtype="float32", skin=0.3)
    run_md(atoms, calc, steps=args.steps, timestep_fs=1.0, ensemble="langevin", temperature_K=1800.0,
           friction_per_fs=0.02, seed=5, log=log, log_mode="overwrite" if args.overwrite else "create")
    distances = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
    print(f"after {args.steps} steps: T = {atoms.get_temperature():.0f} K, shortest Si-Si distance "
          f"{distances.min():.2f} A (start {ase.io.read(ROOT / 'docs/data/l-Si.extxyz').get_all_distances(mic=True)[np.triu_indices(64, 1)].min():.2f} A)")


if __name__ == "__main__":
    main()

"""Speed of the exported truncated model against BodyOrderCalculator, in one run.

For one hydrogen cluster (64 atoms by default, built as in bench_bodyorder.py) and
K = 2, 3, 4: a step of energy and forces (the positions moved a little before every
call, so nothing is reused) through

- exported: the file written by ``export_truncated``, run by metatomic's own ASE
  calculator (``metatomic_ase.MetatomicCalculator``), as any engine would;
- ours: ``BodyOrderCalculator`` on the same model and K (default settings, skin 0).

The first calls of a TorchScript model specialise it (warm-up): they are timed and
printed apart, and not counted. Threads are set explicitly (``--threads``, default 2).

Usage: python benchmarks/bench_export.py [--model NAME_OR_PT] [--threads 2] [--orders 2 3 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import ase
import numpy as np
import torch
from ase.calculators.calculator import all_changes

warnings.filterwarnings("ignore")

from bench_bodyorder import cluster  # noqa: E402 (the same 64-atom clusters; this folder is on sys.path)


def step(calculator, atoms: ase.Atoms, rng) -> float:
    """Seconds of one energy-and-forces call after moving every atom by ~1e-3 A."""
    atoms.positions += rng.normal(0.0, 1e-3, atoms.positions.shape)
    start = time.perf_counter()
    calculator.calculate(atoms, ["energy", "forces"], all_changes)
    return time.perf_counter() - start


def timings(calculator, atoms: ase.Atoms, warmup: int, repeats: int) -> tuple[list[float], float]:
    """(warm-up call times, best of the counted calls)."""
    rng = np.random.default_rng(7)
    first = [step(calculator, atoms, rng) for _ in range(warmup)]
    return first, min(step(calculator, atoms, rng) for _ in range(repeats))


def main() -> None:
    from metatomic_ase import MetatomicCalculator

    from ase_bodyorder.calculator import BodyOrderCalculator
    from ase_bodyorder.export import export_truncated

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pet-h-fci")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--density", type=float, default=0.03, help="atoms per A^3")
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="first calls, timed apart")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    atoms = cluster(args.size, args.density, seed=1)
    print(f"model {args.model}, {args.size} H atoms at {args.density} /A^3, torch threads {torch.get_num_threads()}")
    print(f"{'K':>2} {'sets':>7} {'export s':>9} {'warm-up s (exported)':>22} {'warm-up s (ours)':>18} {'exported ms':>12} {'ours ms':>9} {'exported/ours':>14}")
    with tempfile.TemporaryDirectory() as folder:
        for order in args.orders:
            start = time.perf_counter()
            path = export_truncated(args.model, order, Path(folder) / f"k{order}.pt")
            export_seconds = time.perf_counter() - start
            exported = MetatomicCalculator(str(path))
            ours = BodyOrderCalculator(args.model, order)
            first_exported, exported_best = timings(exported, atoms.copy(), args.warmup, args.repeats)
            first_ours, ours_best = timings(ours, atoms.copy(), args.warmup, args.repeats)
            sets = int(np.sum(ours.results["subcluster_counts"]))
            warm_exported = " ".join(f"{t:.2f}" for t in first_exported)
            warm_ours = " ".join(f"{t:.2f}" for t in first_ours)
            print(
                f"{order:>2} {sets:>7} {export_seconds:>9.2f} {warm_exported:>22} {warm_ours:>18} "
                f"{1e3 * exported_best:>12.1f} {1e3 * ours_best:>9.1f} {exported_best / ours_best:>14.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

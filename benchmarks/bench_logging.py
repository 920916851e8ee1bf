"""Cost of the per-step H5MD log against the MD step it records.

A 64-atom hydrogen cluster, K = 2, velocity Verlet: the same number of steps with and
without the logger attached at every step (plus per-atom contributions and forces),
alternating the order to cancel drift; prints per-step times and the ratio.

Usage: python benchmarks/bench_logging.py [--model default] [--steps 50] [--atoms 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

warnings.filterwarnings("ignore")


def main() -> None:
    from bench_bodyorder import cluster

    from ase_bodyorder import BodyOrderCalculator
    from ase_bodyorder.md import BodyOrderLogger

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    atoms = cluster(args.atoms, args.density, 1)
    calc = BodyOrderCalculator(args.model, args.order)
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=100, rng=np.random.default_rng(0))
    folder = Path(tempfile.mkdtemp())

    def run(with_log: bool, tag: int) -> tuple[float, float]:
        dyn = VelocityVerlet(atoms, 0.5 * units.fs)
        log_time = 0.0
        logger = None
        if with_log:
            logger = BodyOrderLogger(folder / f"run{tag}.h5", atoms, dyn, per_atom=True, flush_every=10)

            def timed():
                nonlocal log_time
                start = time.perf_counter()
                logger()
                log_time += time.perf_counter() - start

            dyn.attach(timed, interval=1)
        start = time.perf_counter()
        dyn.run(args.steps)
        if logger is not None:
            close = time.perf_counter()
            logger.close()
            log_time += time.perf_counter() - close
        return (time.perf_counter() - start) / args.steps, log_time / args.steps

    run(False, -1)  # warm up
    without, with_, logger_only = [], [], []
    for r in range(args.rounds):
        for with_log in ((False, True) if r % 2 == 0 else (True, False)):
            step, log = run(with_log, r)
            (with_ if with_log else without).append(step)
            if with_log:
                logger_only.append(log)
    t0, t1, tl = min(without), min(with_), min(logger_only)
    print(f"{args.atoms} atoms, K={args.order}, subclusters {calc.results['subcluster_counts'].tolist()}")
    print(f"MD step without log: {1e3 * t0:.2f} ms; with log every step: {1e3 * t1:.2f} ms")
    print(f"logger call alone: {1e3 * tl:.3f} ms per step = {100 * tl / t0:.2f}% of a step")
    print(f"overhead from the difference of runs: {100 * (t1 - t0) / t0:+.2f}% (noise included)")


if __name__ == "__main__":
    main()

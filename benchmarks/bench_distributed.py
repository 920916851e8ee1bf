"""Subclusters on Dask workers against one process, measured in one run.

Each case is one MD-like step (energy and forces of a new configuration), timed as the
best of --repeats after a warm-up step, in three set-ups with torch's threads set
explicitly everywhere:

- serial-1t: this process, 1 torch thread;
- serial-2t: this process, 2 torch threads;
- dask-2x1: a LocalCluster of 2 worker processes with 1 thread each (this process,
  which plans and assembles, with 1 thread).

Cases: 64 H atoms at K = 4 (the target: dask-2x1 >= 1.6x serial-1t), a ladder of smaller
steps (16 H at K = 2 up to 64 H at K = 3) that finds the crossover below which Dask
does not pay, and, with sevenn installed, 64-atom silicon at K = 3 (SevenNet-0,
float32). Also measures the scatter/gather round trip of empty tasks, and the
serial parts of a step (enumeration, packing, assembly), from which docs/distributed.md
estimates larger runs.

Usage: python benchmarks/bench_distributed.py [--repeats 2] [--skip-silicon] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(__file__))


def hydrogen(n: int, density: float = 0.035):
    from bench_bodyorder import cluster

    return cluster(n, density, n)


def silicon():
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    atoms.rattle(0.03, seed=7)
    return atoms


def step_time(calc, atoms, repeats: int) -> tuple[float, dict]:
    """Best wall time of one energy+forces step at a new configuration, after one
    warm-up step (model loading, TorchScript specialisation, workers' first task)."""
    atoms.calc = calc
    best, timings = np.inf, {}
    for i in range(repeats + 1):
        atoms.positions[0, 0] += 1e-7  # a new configuration each call
        start = time.perf_counter()
        atoms.get_forces()
        elapsed = time.perf_counter() - start
        if i >= 1 and elapsed < best:
            best, timings = elapsed, dict(calc.timings)
    return best, timings


def noop(i):
    return i


def main() -> None:
    import torch
    from ase_bodyorder import BodyOrderCalculator
    from ase_bodyorder.distributed import local_client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-silicon", action="store_true")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    cases = [("H16", 2, hydrogen(16)), ("H16", 3, hydrogen(16)), ("H32", 3, hydrogen(32)),
             ("H64", 3, hydrogen(64)), ("H64", 4, hydrogen(64))]
    model = {"H": "default"}
    try:
        import sevenn  # noqa: F401

        if not args.skip_silicon:
            cases.append(("Si64", 3, silicon()))
            model["Si"] = "sevennet-0"
    except ImportError:
        print("sevenn not installed: no silicon case")

    def calculator(name, order, client=None):
        if name.startswith("Si"):
            return BodyOrderCalculator("sevennet-0", order, dtype="float32", client=client)
        return BodyOrderCalculator("default", order, client=client)

    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, order, atoms in cases:
            t, timings = step_time(calculator(name, order), atoms.copy(), args.repeats)
            rows.append(dict(case=f"{name} K={order}", setup=f"serial-{threads}t", seconds=t, **timings))
            print(f"{name:>5} K={order} serial-{threads}t {t * 1e3:10.1f} ms  {timings}", flush=True)

    torch.set_num_threads(1)
    with local_client(2, 1) as client:
        # the round trip of a step's worth of empty tasks: submit, run, gather
        for tasks in (2, 4, 16):
            best = np.inf
            for _ in range(5):
                start = time.perf_counter()
                client.gather(client.map(noop, range(tasks), pure=False))
                best = min(best, time.perf_counter() - start)
            rows.append(dict(case=f"{tasks} empty tasks", setup="dask-2x1", seconds=best))
            print(f"round trip of {tasks} empty tasks: {best * 1e3:.1f} ms", flush=True)
        for name, order, atoms in cases:
            t, timings = step_time(calculator(name, order, client), atoms.copy(), args.repeats)
            rows.append(dict(case=f"{name} K={order}", setup="dask-2x1", seconds=t, **timings))
            print(f"{name:>5} K={order} dask-2x1 {t * 1e3:10.1f} ms  {timings}", flush=True)

    # the table, with ratios measured in this run
    by = {(r["case"], r["setup"]): r for r in rows}
    print()
    print(f"{'case':>10} {'subclusters':>22} {'serial-1t ms':>13} {'serial-2t ms':>13} {'dask-2x1 ms':>12} "
          f"{'2x1/1t':>7} {'2x1/2t':>7} {'serial part ms':>15}")
    for name, order, atoms in cases:
        case = f"{name} K={order}"
        s1, s2, d = (by[(case, s)]["seconds"] for s in ("serial-1t", "serial-2t", "dask-2x1"))
        counts = _counts(atoms, order, name)
        serial_part = sum(by[(case, "serial-1t")].get(k, 0.0) for k in ("enumerate", "pack", "assemble"))
        print(f"{case:>10} {'/'.join(map(str, counts)):>22} {s1 * 1e3:13.1f} {s2 * 1e3:13.1f} {d * 1e3:12.1f} "
              f"{s1 / d:7.2f} {s2 / d:7.2f} {serial_part * 1e3:15.1f}")
        for r in rows:
            if r["case"] == case:
                r["counts"] = counts
    crossover = [f"{n} K={k}" for n, k, _ in cases if by[(f"{n} K={k}", "serial-1t")]["seconds"]
                 > by[(f"{n} K={k}", "dask-2x1")]["seconds"]]
    print(f"\nDask (2 workers x 1 thread) beats one process with 1 thread on: {', '.join(crossover) or 'none'}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


def _counts(atoms, order, name) -> list[int]:
    from ase_bodyorder.mbe import plan_subclusters

    cutoff = 5.0 if name.startswith("Si") else 4.0
    return plan_subclusters(atoms, order, cutoff).counts.tolist()


if __name__ == "__main__":
    main()

"""SevenNet-0 body-order expansions: packed evaluation against SevenNet's own ASE
calculator called once per subcluster, and the cost of carbon and silicon at K = 2, 3.

Every case runs in its own process (so that its peak memory is its own), with torch's
threads set explicitly; ratios are measured in the same run.

- Si, 64 atoms (rattled diamond), K = 2: SevenNet's ASE calculator on every subcluster,
  one at a time, against the packed float32 and float64 expansion (target: >= 30x);
- C (diamond, 64 atoms) and Si (64 atoms) at K = 2 and 3: subclusters, wall time and
  peak memory of the packed expansion (energy and forces), beside the plain model.

Usage: python benchmarks/bench_sevennet.py [--threads 2] [--skip-k3-carbon]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def structure(name: str):
    from ase.build import bulk

    lattice = {"C": 3.567, "Si": 5.431}[name]
    atoms = bulk(name, "diamond", a=lattice, cubic=True).repeat(2)
    atoms.rattle(0.03, seed=7)
    return atoms


def run_case(case: dict) -> dict:
    """One measurement, in this process: returns wall time and peak memory."""
    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(case["threads"])
    from ase_bodyorder import BodyOrderCalculator
    from ase_bodyorder.backends.sevennet import SevenNetBackend

    atoms = structure(case["element"])
    out = {}
    if case["kind"] == "one_at_a_time":
        from sevenn.calculator import SevenNetCalculator

        own = SevenNetCalculator("7net-0", device="cpu")
        calc = BodyOrderCalculator(own, case["order"], cutoff=5.0, check_locality=False)
        atoms.calc = calc
        warm = atoms.copy()  # warm-up: the first calls of a model are slow
        warm.calc = own
        warm.get_potential_energy()
    elif case["kind"] == "plain":
        calc = BodyOrderCalculator(SevenNetBackend("sevennet-0", dtype=case["dtype"]), None)
        atoms.calc = calc
    else:
        calc = BodyOrderCalculator(SevenNetBackend("sevennet-0", dtype=case["dtype"]), case["order"],
                                   max_subclusters=None)
        atoms.calc = calc
        small = atoms[:8].copy()  # warm-up on a few subclusters
        small.calc = calc
        small.get_forces()
        calc.reset()
    start = time.perf_counter()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    out["seconds"] = time.perf_counter() - start
    out["energy_per_atom"] = energy / len(atoms)
    out["max_force"] = float(np.abs(forces).max())
    if "subcluster_counts" in calc.results:
        out["counts"] = calc.results["subcluster_counts"].tolist()
        out["truncated_per_atom"] = (calc.results["truncated_energies"] / len(atoms)).tolist()
    out["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure(case: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every process")
    parser.add_argument("--skip-k3-carbon", action="store_true", help="leave out diamond at K = 3 (163,520 triplets)")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    base = {"threads": args.threads}
    print(f"SevenNet-0, 64-atom cells, energy + forces, {args.threads} torch thread(s) per process\n")
    one = measure({**base, "kind": "one_at_a_time", "element": "Si", "order": 2})
    packed = {d: measure({**base, "kind": "packed", "element": "Si", "order": 2, "dtype": d})
              for d in ("float32", "float64")}
    print(f"Si64, K = 2 ({one['counts'][1]} pairs):")
    print(f"  SevenNet's ASE calculator, one subcluster at a time: {one['seconds']:8.2f} s")
    for dtype, r in packed.items():
        print(f"  packed, {dtype}:{'':<28}{r['seconds']:8.2f} s   {one['seconds'] / r['seconds']:6.1f}x faster"
              f"   (E^(2) differs by {abs(r['energy_per_atom'] - one['energy_per_atom']) * 1e3:.3f} meV/atom)")

    print("\nelement  K  dtype    subclusters per order       time (s)  peak memory (MB)  E^(K) (eV/atom)")
    rows = [("Si", 2), ("Si", 3), ("C", 2)] + ([] if args.skip_k3_carbon else [("C", 3)])
    for element, order in rows:
        for dtype in ("float32", "float64"):
            r = packed[dtype] if (element, order) == ("Si", 2) else measure(
                {**base, "kind": "packed", "element": element, "order": order, "dtype": dtype})
            print(f"{element:<7}{order:>3}  {dtype}  {str(r['counts']):<26}{r['seconds']:10.2f}"
                  f"{r['peak_rss_MB']:14.0f}      {r['truncated_per_atom'][-1]:10.4f}")
    for element in ("Si", "C"):
        r = measure({**base, "kind": "plain", "element": element, "dtype": "float32"})
        print(f"{element:<7}  -  plain model (float32)    {'':<19}{r['seconds']:10.2f}{r['peak_rss_MB']:14.0f}"
              f"      {r['energy_per_atom']:10.4f}")


if __name__ == "__main__":
    main()

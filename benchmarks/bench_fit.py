"""Fitting the linear body-ordered models on the shipped hydrogen pool (energies and
forces): time and peak memory at K = 2, 3 and 4, in one run with explicit threads.

Each fit runs in its own process, so that its peak memory (ru_maxrss) is its own.

Usage: python benchmarks/bench_fit.py [--threads 2] [--orders 2,3,4] [--limit N] [--batch-size 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "fci_h_clusters.extxyz"

_ONE_FIT = r"""
import json, resource, sys, time
import ase.io, torch
threads, order, limit, batch, data, output = json.loads(sys.argv[1])
torch.set_num_threads(threads)
from ase_bodyorder.linear.fit import fit_linear_model
if limit:
    ase.io.write(output + ".extxyz", ase.io.read(data, f":{limit}"))
    data = output + ".extxyz"
start = time.perf_counter()
result = fit_linear_model(data, order, output, batch_size=batch, overwrite=True)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
errors = result.errors["validation"]["H"]
print(json.dumps({"order": order, "seconds": seconds, "peak_MB": peak, "structures": sum(
    m["structures"] for split in result.errors.values() for m in split.values()),
    "validation_meV_per_atom": errors["energy_meV_per_atom"], "validation_eV_per_A": errors["force_eV_per_A"],
    "regularisation": result.regularisation}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--orders", default="2,3,4")
    parser.add_argument("--limit", type=int, default=0, help="only the first N structures (default: all)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for order in map(int, args.orders.split(",")):
            arguments = [args.threads, order, args.limit, args.batch_size, str(POOL), str(Path(folder) / f"k{order}.pt")]
            run = subprocess.run([sys.executable, "-c", _ONE_FIT, json.dumps(arguments)], capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(run.stderr[-3000:])
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
            row = rows[-1]
            print(f"K = {order}: {row['structures']} structures, {row['seconds']:.1f} s, peak {row['peak_MB']:.0f} MB; "
                  f"validation {row['validation_meV_per_atom']:.2f} meV/atom, {row['validation_eV_per_A']:.3f} eV/A "
                  f"(regularisation {row['regularisation']:g})", flush=True)
    base = rows[0]["seconds"]
    print("time against the first order: " + ", ".join(f"K = {r['order']}: {r['seconds'] / base:.1f}x" for r in rows))


if __name__ == "__main__":
    main()

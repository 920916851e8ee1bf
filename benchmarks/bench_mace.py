"""A native MACE model packed against mace-torch's own calculator one subcluster at a time.

A hydrogen cluster (64 atoms by default, uniform in a sphere at a density of the shipped
data's dense half, no two atoms closer than 0.7 A), K = 3, energy and forces:

- packed: ``BodyOrderCalculator("file.model", K)``, every subcluster of a chunk in one
  graph (backends/mace.py), the whole calculation timed (plan, evaluate, assemble);
- one at a time: mace-torch's ``MACECalculator`` (float64) on each multi-body subcluster,
  as ``BodyOrderCalculator(MACECalculator(...), K, cutoff=r_max)`` would call it. Timed on
  an evenly spread sample of --sample subclusters and scaled to the full count (its
  cost is linear in the count; the output says so).

The model is the shipped mace-h-fci rebuilt as a native file
(training/mace/native_from_export.py) unless --model gives another. torch's threads are
set explicitly (--threads). Runs in the MACE environment (docs/mace.md).

Usage: python benchmarks/bench_mace.py [--model FILE.model] [--atoms 64] [--order 3]
       [--density 0.12] [--sample 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
import warnings
from pathlib import Path

import ase
import numpy as np

warnings.filterwarnings("ignore")
SCRIPT = Path(__file__).resolve().parent.parent / "training" / "mace" / "native_from_export.py"


def cluster(n: int, density: float, seed: int) -> ase.Atoms:
    """n H atoms uniform in a sphere of volume n/density, none closer than 0.7 A (as
    benchmarks/bench_bodyorder.py)."""
    rng = np.random.default_rng(seed)
    radius = (3 * n / (4 * np.pi * density)) ** (1 / 3)
    points: list[np.ndarray] = []
    while len(points) < n:
        p = rng.uniform(-radius, radius, 3)
        if p @ p <= radius**2 and all(np.linalg.norm(p - q) >= 0.7 for q in points):
            points.append(p)
    return ase.Atoms(f"H{n}", positions=np.array(points))


def native_model(folder: Path) -> Path:
    """The shipped mace-h-fci as a native .model file."""
    import torch

    spec = importlib.util.spec_from_file_location("native_from_export", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = folder / "mace-h-fci.model"
    torch.save(module.native_from_export(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a native MACE .model file (default: mace-h-fci rebuilt)")
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--density", type=float, default=0.12, help="atoms per A^3 (default %(default)s)")
    parser.add_argument("--sample", type=int, default=200, help="subclusters timed one at a time")
    parser.add_argument("--repeats", type=int, default=2, help="packed runs; the best is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    args = parser.parse_args()

    import torch
    from mace.calculators import MACECalculator

    from ase_bodyorder import BodyOrderCalculator
    from ase_bodyorder.mbe import evaluate_subclusters, plan_subclusters

    torch.set_num_threads(args.threads)
    folder = tempfile.TemporaryDirectory()
    model = Path(args.model) if args.model else native_model(Path(folder.name))
    atoms = cluster(args.atoms, args.density, args.atoms)

    calc = BodyOrderCalculator(str(model), args.order, max_subclusters=None)
    cutoff = calc.backend.default_cutoff
    warm = atoms[:8].copy()  # warm-up: the first calls of a model are slow
    warm.calc = calc
    warm.get_forces()
    atoms.calc = calc
    packed = []
    for _ in range(args.repeats):
        atoms.positions[0, 0] += 1e-9  # a new configuration each time: nothing cached
        start = time.perf_counter()
        atoms.get_forces()
        packed.append(time.perf_counter() - start)
    t_packed = min(packed)
    counts = calc.results["subcluster_counts"].tolist()

    previous = torch.get_default_dtype()
    own = MACECalculator(model_paths=str(model), device="cpu", default_dtype="float64")
    torch.set_default_dtype(previous)
    subclusters = plan_subclusters(atoms, args.order, cutoff, one_body_per_species=True)
    total = len(subclusters.ptr) - 1
    picked = np.unique(np.linspace(0, total - 1, min(args.sample, total)).astype(int))
    sample = [subclusters.cluster(int(m)) for m in picked]
    warm = sample[0].copy()
    warm.calc = own
    warm.get_forces()
    energies = []
    start = time.perf_counter()
    for one in sample:
        one.calc = own
        one.get_forces()
        energies.append(one.get_potential_energy())
    t_sample = time.perf_counter() - start
    t_one = t_sample / len(sample) * total

    # the sample's energies from the packed backend: the two paths agree
    packed_energies = evaluate_subclusters(subclusters, calc.backend, forces=False)["energies"][picked]
    agreement = np.abs(packed_energies - np.array(energies)).max()

    print(f"model {model.name} ({calc.backend.dtype}, r_max {cutoff} A), torch threads {torch.get_num_threads()}")
    print(f"H{args.atoms}, density {args.density} atoms/A^3, K = {args.order}: subclusters per order {counts} "
          f"({total} multi-body subclusters; single atoms once per species)")
    print(f"  packed BodyOrderCalculator, energy + forces (best of {args.repeats}): {t_packed:10.2f} s")
    print(f"  MACECalculator one subcluster at a time: {1e3 * t_sample / len(sample):.2f} ms each, "
          f"measured on {len(sample)} of {total} and scaled: ~{t_one:8.1f} s")
    print(f"  packed is {t_one / t_packed:.1f}x faster  (sample energies agree to {agreement:.1e} eV)")


if __name__ == "__main__":
    main()

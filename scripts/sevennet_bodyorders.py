"""Body orders of real carbon and silicon structures with universal models, SevenNet-0
and CHGNet (arXiv 2502.16125).

For diamond, graphite, amorphous carbon (a 64-atom melt-quench made here with SevenNet-0
MD), crystalline and liquid silicon (a 64-atom melt made the same way): E^(k)/atom for
k = 1..K beside the plain model's E/atom, with subcluster counts and wall times, written
to docs/data/<model>_bodyorders.json and plotted to docs/figures/<model>_bodyorders.png
(``sevennet`` for SevenNet-0); once both models' data exist, both are drawn side by side
in docs/figures/universal_bodyorders.png.

The amorphous and liquid structures are made once and saved (docs/data/*.extxyz); a
rerun reuses them, whatever the model (every model sees the same structures).
Everything is float64 (docs/universal.md says why).

Usage: python scripts/sevennet_bodyorders.py [--model sevennet-0|chgnet] [--max-order 3]
       [--threads 2] [--only c-Si,l-Si]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "data"
FIGURES = ROOT / "docs" / "figures"
STRUCTURES = ("diamond", "graphite", "a-C", "c-Si", "l-Si")
#: file prefix and plot label of each model this script runs
MODELS = {"sevennet-0": ("sevennet", "SevenNet-0"), "chgnet": ("chgnet", "CHGNet 0.3.0")}


def crystal(name: str):
    from ase.build import bulk
    from ase.lattice.hexagonal import Graphite

    if name == "diamond":
        return bulk("C", "diamond", a=3.567, cubic=True).repeat(2)
    if name == "graphite":
        return Graphite("C", latticeconstant={"a": 2.464, "c": 6.711}, size=(4, 4, 1))
    if name == "c-Si":
        return bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    raise ValueError(name)


def melt(symbol: str, density_g_cm3: float, hot_K: float, cold_K: float | None, seed: int, steps: int):
    """64 atoms at a density, melted at hot_K with SevenNet-0 (plain model, Langevin),
    then (cold_K given) quenched linearly to cold_K and relaxed."""
    import ase
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import FIRE

    from ase_bodyorder import BodyOrderCalculator

    rng = np.random.default_rng(seed)
    mass = ase.data.atomic_masses[ase.data.atomic_numbers[symbol]]
    volume = 64 * mass / (density_g_cm3 * 0.602214076)  # A^3
    side = volume ** (1 / 3)
    # a simple cubic start, jittered: the melt forgets it
    grid = (np.indices((4, 4, 4)).reshape(3, -1).T + 0.5) * side / 4
    atoms = ase.Atoms(f"{symbol}64", positions=grid + rng.normal(scale=0.1, size=(64, 3)), cell=[side] * 3, pbc=True)
    atoms.calc = BodyOrderCalculator("sevennet-0", None, dtype="float32")
    MaxwellBoltzmannDistribution(atoms, temperature_K=hot_K, rng=rng)
    dynamics = Langevin(atoms, 1.0 * units.fs, temperature_K=hot_K, friction=0.02 / units.fs, fixcm=False, rng=rng)
    dynamics.run(steps)
    if cold_K is not None:
        for temperature in np.linspace(hot_K, cold_K, 10):
            dynamics.set_temperature(temperature_K=temperature)
            dynamics.run(steps // 10)
        FIRE(atoms, logfile=None).run(fmax=0.1, steps=300)
    atoms.calc = None
    return atoms


def structures(only: str | None) -> dict:
    import ase.io

    made = {}
    for name in STRUCTURES:
        if only and name not in only.split(","):
            continue
        if name in ("a-C", "l-Si"):
            path = DATA / f"{name}.extxyz"
            if not path.exists():
                start = time.perf_counter()
                atoms = (melt("C", 2.2, 5000.0, 300.0, 11, 400) if name == "a-C"
                         else melt("Si", 2.57, 1800.0, None, 12, 400))
                atoms.info["made_in_s"] = time.perf_counter() - start
                DATA.mkdir(parents=True, exist_ok=True)
                ase.io.write(path, atoms)
            made[name] = ase.io.read(path)
        else:
            made[name] = crystal(name)
    return made


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="sevennet-0")
    parser.add_argument("--max-order", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated structure names (diamond,graphite,a-C,c-Si,l-Si)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from ase_bodyorder import BodyOrderCalculator
    from ase_bodyorder.backends import make_backend

    backend = make_backend(args.model, dtype="float64")
    prefix, label = MODELS[args.model]
    out_path = DATA / f"{prefix}_bodyorders.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name, atoms in structures(args.only).items():
        n = len(atoms)
        start = time.perf_counter()
        energy = backend.evaluate_full(atoms, forces=False, stress=False)["energy"]
        row = {"n_atoms": n, "plain_eV_per_atom": energy / n, "plain_s": time.perf_counter() - start, "orders": []}
        for order in range(1, args.max_order + 1):
            calc = BodyOrderCalculator(backend, order, max_subclusters=None)
            start = time.perf_counter()
            result = calc.compute_many([atoms], forces=False)[0]
            row["orders"].append({
                "K": order,
                "truncated_eV_per_atom": float(result["truncated_energies"][-1] / n),
                "counts": result["subcluster_counts"].tolist(),
                "seconds": time.perf_counter() - start,
            })
            print(f"{name:<9} K={order}  E^(K)/atom {row['orders'][-1]['truncated_eV_per_atom']:10.4f} eV  "
                  f"plain {row['plain_eV_per_atom']:10.4f}  counts {row['orders'][-1]['counts']}  "
                  f"{row['orders'][-1]['seconds']:.1f} s", flush=True)
        results[name] = row
        DATA.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))
    plot({label: results}, FIGURES / f"{prefix}_bodyorders.png")
    every = {lab: DATA / f"{pre}_bodyorders.json" for pre, lab in MODELS.values()}
    if all(path.exists() for path in every.values()):
        plot({lab: json.loads(path.read_text()) for lab, path in every.items()}, FIGURES / "universal_bodyorders.png")


def plot(models: dict, path: Path) -> None:
    """E^(K) - E per atom against K, one panel per model (its label: its results)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5 * len(models), 4.2), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, (label, results) in zip(axes, models.items()):
        for colour, name in enumerate(STRUCTURES):  # one colour per structure in every panel
            if name not in results:
                continue
            row = results[name]
            ks = [o["K"] for o in row["orders"]]
            gap = [o["truncated_eV_per_atom"] - row["plain_eV_per_atom"] for o in row["orders"]]
            ax.plot(ks, gap, "o-", color=f"C{colour}", label=name)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_yscale("symlog", linthresh=10)  # a few eV/atom and hundreds in one panel
        ax.set_xlabel("body order K")
        ax.set_ylabel(f"E$^{{(K)}}$ - E (eV/atom), {label}")
        ax.set_xticks(sorted({o["K"] for r in results.values() for o in r["orders"]}))
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

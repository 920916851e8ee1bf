"""Diverse condensed carbon without dimers, labelled with SevenNet-0 (issue: explicit body
order, arXiv 2502.16125's carbon experiment).

No DFT of condensed carbon can be computed here at this scale, so every label is
SevenNet-0's (a universal model trained on PBE/MPtrj): energies and forces of the plain
model, float32 (SevenNet's own precision). Its own dimer curve is then the exact
two-body interaction of the labeller.

What is made (periodic cells of 8 to 64 atoms, no isolated dimers):

- diamond and graphite: supercells of 8-64 atoms, each scaled to several densities,
  strained (random symmetric strain) and rattled (Gaussian, several widths);
- liquid carbon: SevenNet-0 Langevin MD of 32 and 64 atoms at several densities and
  temperatures, frames taken along the trajectory (the MD's own evaluations are the
  labels);
- amorphous carbon: the same melts quenched, frames taken along the quench.

Everything is seeded, part by part (each block of crystals and each MD run has a seed of
its own): a rerun with the same options writes the same file (up to the float32
round-off of the model). Each part is written to ``data/carbon_sevennet_parts/`` as soon
as it is done, and a rerun skips the parts already there: an interrupted run loses at
most the part under way. The parts are joined into the output at the end. Usage:

    python training/linear/carbon_dataset.py [-o data/carbon_sevennet.extxyz.gz]
        [--threads 1] [--quick]

``--quick`` makes a few structures of each kind (in a folder of its own), for trying
the script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "data" / "carbon_sevennet.extxyz.gz"
#: crystals per part
CRYSTAL_PART = 200
CARBON_MASS = 12.011
#: g/cm^3 to atoms/A^3 for carbon
_PER_A3 = 0.602214076 / CARBON_MASS


def _calculator():
    from ase_bodyorder import BodyOrderCalculator

    return BodyOrderCalculator("sevennet-0", None, dtype="float32")  # the plain model


def _label(atoms, calculator, kind: str, **info):
    """``atoms`` with SevenNet-0's energy and forces stored as the labels."""
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = atoms.copy()
    atoms.calc = calculator
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    atoms.info.update(kind=kind, density_g_cm3=round(len(atoms) / atoms.get_volume() / _PER_A3, 4), **info)
    return atoms


def _crystal(name: str, size: tuple[int, int, int]):
    from ase.build import bulk
    from ase.lattice.hexagonal import Graphite

    if name == "diamond":
        return bulk("C", "diamond", a=3.567, cubic=True).repeat(size)
    return Graphite("C", latticeconstant={"a": 2.464, "c": 6.711}, size=size)


def crystals(rng, calculator, count: int) -> list:
    """Diamond and graphite cells, scaled, strained and rattled."""
    sizes = {"diamond": [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)],
             "graphite": [(2, 1, 1), (2, 2, 1), (3, 2, 1), (4, 4, 1)]}  # 8-64 atoms
    made = []
    for i in range(count):
        name = ("diamond", "graphite")[i % 2]
        size = sizes[name][rng.integers(len(sizes[name]))]
        atoms = _crystal(name, size)
        scale = rng.uniform(0.92, 1.08)  # linear: densities from 0.8 to 1.3 times the crystal's
        strain = rng.normal(scale=0.025, size=(3, 3))
        strain = 0.5 * (strain + strain.T)
        cell = atoms.cell.array @ (scale * (np.eye(3) + strain))
        atoms.set_cell(cell, scale_atoms=True)
        width = rng.choice([0.02, 0.05, 0.1, 0.15])
        atoms.positions += rng.normal(scale=width, size=atoms.positions.shape)
        made.append(_label(atoms, calculator, name, rattle_A=float(width), scale=round(float(scale), 4)))
    return made


def _random_start(n_atoms: int, density: float, rng):
    """``n_atoms`` carbon atoms in a cubic cell at ``density`` (g/cm^3), no two closer
    than 1.2 A (a melt forgets its start)."""
    import ase

    side = (n_atoms / (density * _PER_A3)) ** (1 / 3)
    positions = []
    while len(positions) < n_atoms:
        trial = rng.uniform(0, side, 3)
        if all(np.linalg.norm((trial - p + side / 2) % side - side / 2) > 1.2 for p in positions):
            positions.append(trial)
    return ase.Atoms(f"C{n_atoms}", positions=positions, cell=[side] * 3, pbc=True)


def melts(rng, calculator, runs: list[tuple[int, float, float]], steps: int, every: int, quench: bool) -> list:
    """Frames of SevenNet-0 Langevin MD (1 fs): for each (atoms, density, temperature),
    ``steps`` at the temperature, then (``quench``) ``steps`` cooling to 300 K; a frame
    every ``every`` steps after the first 50."""
    from ase import units
    from ase.md.langevin import Langevin

    from ase_bodyorder.md import _thermalize  # ASE's Maxwell-Boltzmann, old or new ASE

    made = []
    for n_atoms, density, temperature in runs:
        atoms = _random_start(n_atoms, density, rng)
        atoms.calc = calculator
        _thermalize(atoms, temperature, rng)
        dynamics = Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                            fixcm=False, rng=rng)
        kind = "liquid"

        def take():
            if dynamics.nsteps >= 50 and dynamics.nsteps % every == 0:
                made.append(_label(atoms, calculator, kind, md_temperature_K=float(temperature)))

        dynamics.attach(take, interval=1)
        dynamics.run(steps)
        if quench:
            kind = "amorphous"
            for target in np.linspace(temperature, 300.0, 10):
                dynamics.set_temperature(temperature_K=target)
                dynamics.run(steps // 10)
        print(f"  {kind} run: {n_atoms} atoms at {density} g/cm3, {temperature:.0f} K: {len(made)} frames so far",
              flush=True)
    return made


def _parts(quick: bool) -> list[tuple[str, dict]]:
    """Every part of the data set: its name and what makes it."""
    densities = (1.8, 2.4, 3.0, 3.4)
    if quick:
        return [("crystals-0", {"count": 6}), ("liquid-32-1.8", {"run": (32, 1.8, 6000.0), "quench": False}),
                ("amorphous-32-1.8", {"run": (32, 1.8, 5000.0), "quench": True})]
    parts = [(f"crystals-{i}", {"count": CRYSTAL_PART}) for i in range(1200 // CRYSTAL_PART)]
    parts += [(f"liquid-{n}-{d}", {"run": (n, d, 6000.0), "quench": False}) for n in (32, 64) for d in densities]
    parts += [(f"amorphous-32-{d}", {"run": (32, d, 5000.0), "quench": True}) for d in densities]
    # two densities at 64 atoms: each 64-atom quench is about 20 minutes on one core
    parts += [(f"amorphous-64-{d}", {"run": (64, d, 5000.0), "quench": True}) for d in (1.8, 3.0)]
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(OUTPUT))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2502)
    parser.add_argument("--quick", action="store_true", help="a few structures of each kind")
    args = parser.parse_args()
    import ase.io
    import torch

    torch.set_num_threads(args.threads)
    calculator = _calculator()
    start = time.perf_counter()
    steps, every = (60, 10) if args.quick else (300, 8)
    folder = Path(args.output).parent / (Path(args.output).name.split(".")[0] + "_parts")
    folder.mkdir(parents=True, exist_ok=True)
    structures = []
    for index, (name, recipe) in enumerate(_parts(args.quick)):
        path = folder / f"{name}.extxyz.gz"
        if not path.exists():
            rng = np.random.default_rng([args.seed, index])  # each part its own seed: resumable
            if "count" in recipe:
                made = crystals(rng, calculator, recipe["count"])
            else:
                made = melts(rng, calculator, [recipe["run"]], steps, every, quench=recipe["quench"])
            for atoms in made:
                atoms.info["labels"] = "SevenNet-0 (sevennet-0, 11Jul2024), float32"
                atoms.info["part"] = name
            partial = folder / f"{name}.partial.extxyz.gz"  # the suffix tells ASE to compress
            ase.io.write(partial, made, format="extxyz")
            partial.replace(path)
            print(f"{name}: {len(made)} structures ({time.perf_counter() - start:.0f} s)", flush=True)
        structures += ase.io.read(path, ":")
    ase.io.write(args.output, structures, format="extxyz")
    kinds = {k: sum(a.info["kind"] == k for a in structures) for k in ("diamond", "graphite", "liquid", "amorphous")}
    print(f"wrote {len(structures)} structures {kinds} to {args.output} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

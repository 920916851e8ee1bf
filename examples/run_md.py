"""ASE molecular dynamics with a body-order-truncated MLIP and the H5MD many-body log.

    python examples/run_md.py [--model default] [-K 3] [--steps 200] [--log h16_md.h5]
"""

import argparse
from pathlib import Path

import ase.io
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from tqdm.auto import tqdm

from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.md import BodyOrderLogger

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ASE < 3.29
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="default")
parser.add_argument("-K", "--max-order", type=int, default=3)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--log", default="h16_md.h5")
parser.add_argument("--overwrite", action="store_true", help="replace an existing log")
args = parser.parse_args()

atoms = ase.io.read(Path(__file__).parent / "h16.xyz")
atoms.calc = BodyOrderCalculator(args.model, args.max_order)
thermalize_momenta(atoms, temperature_K=100)
Stationary(atoms)

# fixcm=False: ASE's default (True) is deprecated and does not sample NVT exactly
dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=100, friction=0.01 / units.fs, fixcm=False)
# log every 2 steps; an existing log is replaced only with --overwrite
# (ase_bodyorder.md.run_md does all of this, with the same progress bar, in one call)
with BodyOrderLogger(args.log, atoms, dyn, mode="overwrite" if args.overwrite else "create", per_atom=True) as logger, tqdm(
    total=args.steps, unit="step", desc=f"MD at K = {args.max_order}"
) as bar:
    dyn.attach(logger, interval=2)

    def progress():
        if dyn.nsteps:
            temperature, total = atoms.get_temperature(), atoms.get_total_energy()
            bar.set_postfix_str(f"T={temperature:.0f}K Etot={total:.4f}eV", refresh=False)
            bar.update(1)

    dyn.attach(progress, interval=1)
    dyn.run(args.steps)

results = atoms.calc.results
print("dE_k (eV):", results["body_order_energies"])
print("E^(k) (eV):", results["truncated_energies"])
print("subclusters per order:", results["subcluster_counts"])
print(f"log written to {args.log}; plot it with: python examples/plot_log.py {args.log}")

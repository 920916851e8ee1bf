"""Read a many-body log and plot how the energy splits over body orders.

    python examples/plot_log.py LOG.h5 [-o bodyorder.png]
"""

import argparse
from pathlib import Path

from matplotlib.figure import Figure

from ase_bodyorder.h5md import read_log

parser = argparse.ArgumentParser()
parser.add_argument("log")
parser.add_argument("-o", "--output", default="bodyorder.png")
parser.add_argument("--overwrite", action="store_true", help="replace an existing figure")
args = parser.parse_args()
if Path(args.output).exists() and not args.overwrite:
    raise SystemExit(f"'{args.output}' exists: pass --overwrite to replace it")

data = read_log(args.log)
dE = data.observable("body_order_energies")  # (frames, K), eV
time_ps = data.observables["body_order_energies"]["time"] / 1000
n_atoms = len(data.numbers)
print(f"{len(data.step)} frames of {n_atoms} atoms, K = {dE.shape[1]}, model {data.metadata.get('model')}")

# dE_2 (about -3 eV/atom) and dE_3 (near 0) on one axis would both look flat: each order
# gets its own panel, showing its fluctuation about its mean (meV/atom); dE_1 is constant
orders = range(1, dE.shape[1])
fig = Figure(figsize=(7, 1.8 * max(1, len(orders)) + 0.6), layout="constrained")
axes = fig.subplots(max(1, len(orders)), 1, sharex=True, squeeze=False)[:, 0]
for ax, k in zip(axes, orders):
    mean = dE[:, k].mean() / n_atoms
    ax.plot(time_ps, (dE[:, k] / n_atoms - mean) * 1000, color=f"C{k - 1}")
    ax.set_ylabel(f"$\\Delta E_{{{k + 1}}}$ - mean\n(meV/atom)")
    ax.set_title(f"$\\Delta E_{{{k + 1}}}$: mean {mean:.4f} eV/atom", fontsize=9, loc="left")
axes[-1].set_xlabel("time (ps)")
fig.savefig(args.output)  # the object-oriented API: no backend to select, no pyplot
print(f"plot written to {args.output} (ase-bodyorder report {args.log} draws more); "
      "the frames as ASE Atoms: data.frames()")

"""Read a many-body log and plot how the energy splits over body orders.

    python examples/plot_log.py LOG.h5 [-o bodyorder.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ase_bodyorder.h5md import read_log  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("log")
parser.add_argument("-o", "--output", default="bodyorder.png")
args = parser.parse_args()

data = read_log(args.log)
dE = data.observable("body_order_energies")  # (frames, K), eV
time_ps = data.observables["body_order_energies"]["time"] / 1000
n_atoms = len(data.numbers)
print(f"{len(data.step)} frames of {n_atoms} atoms, K = {dE.shape[1]}, model {data.metadata.get('model')}")

fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
for k in range(1, dE.shape[1]):
    ax.plot(time_ps, dE[:, k] / n_atoms, label=f"$\\Delta E_{k + 1}$")
ax.set_xlabel("time (ps)")
ax.set_ylabel("contribution (eV/atom)")
ax.legend()
fig.savefig(args.output)
print(f"plot written to {args.output}; the frames as ASE Atoms: data.frames()")

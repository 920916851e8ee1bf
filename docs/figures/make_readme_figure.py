"""Make docs/figures/readme.png, the picture on the README.

Left: the two- and three-body energies of the shipped models (eps_2 of H2 at distance r,
eps_3 of an equilateral H3 of side r; ase_bodyorder.analysis). Right: every order's
contribution |dE_k| to the energy of the eight held-out H8 clusters shipped with
ase_bodyorder.compare (mean over the clusters of each density, meV/atom), exact
FCI/STO-3G beside the models (every subset: cutoff=None); an open marker is a model's
dE_k of the wrong sign.

    python docs/figures/make_readme_figure.py        # about 20 s of CPU

Object-oriented matplotlib only (no pyplot).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ase_bodyorder import list_models
from ase_bodyorder.analysis import dimer_curve, trimer_curve
from ase_bodyorder.compare import compare_expansions, shipped_clusters

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(__file__).resolve().parent / "readme.png"
STYLE = {"FCI/STO-3G": ("k", "o"), "pet-h-fci": ("C0", "s"), "soap-bpnn-h-fci": ("C1", "^"), "mace-h-fci": ("C2", "d")}


def contributions(models: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Mean dE_k (meV/atom) per density: FCI and every model (ase_bodyorder.compare)."""
    result = compare_expansions(shipped_clusters(), models, "shipped")
    out = {}
    for density in ("high", "low"):
        rows = {"FCI/STO-3G": result.reference[density].mean(axis=0)}
        rows.update({name: result.models[name][density].mean(axis=0) for name in models})
        out[density] = rows
    return out


def main() -> None:
    models = list_models()
    fig = Figure(figsize=(13, 4.2), dpi=100, layout="constrained")
    left, high, low = fig.subplots(1, 3)

    lowest = 0.0
    for name in models:
        colour = STYLE.get(name, ("C2", "d"))[0]
        dimer = dimer_curve(name, ("H", "H"), np.linspace(0.5, 4.5, 81))
        trimer = trimer_curve(name, ("H", "H", "H"), np.linspace(0.6, 4.5, 79))
        left.plot(dimer.distance, dimer.energy, color=colour, label=f"{name}: $\\epsilon_2$ (H$_2$)")
        lowest = min(lowest, dimer.energy.min())
        left.plot(trimer.distance, trimer.energy, color=colour, ls="--", label=f"{name}: $\\epsilon_3$ (H$_3$)")
    left.axhline(0, color="k", lw=0.5)
    left.set_ylim(1.08 * lowest, 3.0)
    left.set_xlabel("r (Å): H$_2$ bond, or side of the equilateral H$_3$")
    left.set_ylabel("energy (eV)")
    left.set_title("two- and three-body energies")
    left.legend(fontsize=8)

    data = contributions(models)
    for ax, density in ((high, "high"), (low, "low")):
        rows = data[density]
        exact = rows["FCI/STO-3G"]
        k = np.arange(2, len(exact) + 1)
        for name, values in rows.items():
            colour, marker = STYLE.get(name, ("C2", "d"))
            values = values[1:]
            right = np.sign(values) == np.sign(exact[1:])
            ax.plot(k, np.abs(values), color=colour, lw=1, alpha=0.6)
            ax.plot(k[right], np.abs(values[right]), ls="", marker=marker, color=colour, label=name)
            if (~right).any():
                ax.plot(k[~right], np.abs(values[~right]), ls="", marker=marker, mfc="none", color=colour)
        ax.set_yscale("log")
        ax.set_xlabel("body order k")
        ax.set_ylabel("|dE$_k$| (meV/atom)")
        ax.set_title(f"H$_8$ clusters, {density} density")
        if density == "low":
            ax.legend(fontsize=8, title="open marker: wrong sign", title_fontsize=8)
        else:
            ax.legend(fontsize=8)
    fig.savefig(OUTPUT)
    for density, rows in data.items():
        for name, values in rows.items():
            print(f"{density:>4} {name:<16}" + " ".join(f"{v:9.1f}" for v in values[1:]))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()

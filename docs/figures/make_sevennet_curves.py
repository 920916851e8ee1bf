"""Dimer curves eps_2(r) of the universal models (the SevenNet models and CHGNet 0.3.0)
beside the PBE references (PySCF) and, for H-H, the shipped hydrogen models:
docs/figures/universal_dimers.png (docs/universal.md).

Usage: python docs/figures/make_sevennet_curves.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ase_bodyorder.analysis import dimer_curve, plot_curves, reference_curve

OUT = Path(__file__).resolve().parent / "universal_dimers.png"
UNIVERSAL = ["sevennet-0", "sevennet-0-22may2024", "sevennet-l3i5", "chgnet"]
PAIRS = {("C", "C"): UNIVERSAL, ("Si", "Si"): UNIVERSAL, ("C", "H"): UNIVERSAL, ("Si", "H"): UNIVERSAL,
         ("H", "H"): UNIVERSAL + ["pet-h-fci", "soap-bpnn-h-fci"]}


def main() -> None:
    warnings.filterwarnings("ignore")
    curves = []
    for pair, models in PAIRS.items():
        reference = reference_curve("pbe", pair)
        curves.append(reference)
        for model in models:
            curves.append(dimer_curve(model, pair, reference.distance))
            i = curves[-1].energy.argmin()
            print(f"{'-'.join(pair):<6}{model:<22} minimum {curves[-1].energy[i]:8.3f} eV at {curves[-1].distance[i]:.2f} A"
                  f"   (PBE {reference.energy.min():8.3f} eV at {reference.distance[reference.energy.argmin()]:.2f} A)")
    OUT.unlink(missing_ok=True)
    plot_curves(curves, OUT)


if __name__ == "__main__":
    main()

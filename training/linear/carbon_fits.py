"""Experiment 2 of the explicit-body-order issue (arXiv 2502.16125's carbon experiment):
linear body-ordered models of carbon at K = 2, 3, 4 on two makeups, and their dimer curves.

- ``pbe-dimers``: dimers only, the shipped PBE C-C binding curve
  (ase_bodyorder/references/pbe_dimers.json, PySCF UKS/def2-TZVP: energies, no forces)
  with the isolated atom at 0 eV;
- ``diverse``: condensed carbon without dimers, ``data/carbon_sevennet.extxyz.gz``
  (training/linear/carbon_dataset.py: diamond, graphite, liquid and amorphous carbon,
  8-64 atoms), **labelled by SevenNet-0, not by DFT**.

Every model has a 5 A cutoff (SevenNet-0's). The fits use energies and forces where the
data has them, except K = 4 on ``diverse``, fitted to energies alone by default: its force
rows take one backward pass per nu = 3 feature and batch, hours on 2 cores at 64 atoms
(``--k4-forces`` fits them anyway). Then the dimer curves: each model's, PBE's and the
labeller's (SevenNet-0's own, the exact two-body interaction of the labels), with the well
depth and position of each, written to ``docs/data/linear_carbon.json`` and drawn in
``docs/figures/linear_carbon.png``. Models go to ``training/runs/linear-c/``; a fit whose
model exists is not redone. Usage:

    python training/linear/carbon_fits.py [--threads 1] [--k4-forces]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "training" / "runs" / "linear-c"
DIVERSE = ROOT / "data" / "carbon_sevennet.extxyz.gz"
SUMMARY = ROOT / "docs" / "data" / "linear_carbon.json"
FIGURE = ROOT / "docs" / "figures" / "linear_carbon.png"
CUTOFF = 5.0
DISTANCES = np.linspace(0.8, 5.0, 169)


def pbe_dimers() -> Path:
    """The PBE C-C curve as training data: one C2 per distance, energy = binding energy."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    curve = json.loads((ROOT / "ase_bodyorder" / "references" / "pbe_dimers.json").read_text())["C-C"]
    frames = [ase.Atoms("C")]
    frames[0].calc = SinglePointCalculator(frames[0], energy=0.0)
    for distance, energy in zip(curve["distance_A"], curve["binding_energy_eV"]):
        atoms = ase.Atoms("C2", positions=[[0, 0, 0], [0, 0, distance]])
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy))
        frames.append(atoms)
    path = RUNS / "pbe-dimers.extxyz"
    ase.io.write(path, frames)
    return path


def well(distance, energy) -> dict:
    i = int(np.argmin(energy))
    return {"depth_eV": float(energy[i]), "position_A": float(distance[i])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k4-forces", action="store_true", help="fit K = 4 on the diverse data to forces too")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ase_bodyorder.analysis import dimer_curve, reference_curve
    from ase_bodyorder.linear import fit_linear_model

    RUNS.mkdir(parents=True, exist_ok=True)
    summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    fits = summary.setdefault("fits", {})
    data = {"pbe-dimers": pbe_dimers(), "diverse": DIVERSE}
    for makeup, path in data.items():
        for K in (2, 3, 4):
            key = f"{makeup}-k{K}"
            output = RUNS / f"{key}.pt"
            if output.exists() and key in fits:
                continue
            forces = not (makeup == "diverse" and K == 4 and not args.k4_forces)
            start = time.perf_counter()
            # 50 structures a batch: the power spectrum's position gradients of 64-atom cells
            # with ~90 neighbours each are about 1 GB per 50 structures
            result = fit_linear_model(path, K, output, cutoff=CUTOFF, overwrite=True, forces=forces,
                                      name=f"linear-c-{key}", progress=True, batch_size=50)
            fits[key] = {"makeup": makeup, "K": K, "forces": forces, "seconds": round(time.perf_counter() - start, 1),
                         "threads": args.threads, "regularisation": result.regularisation, "errors": result.errors}
            print(key, json.dumps(result.errors["validation"]), f"{fits[key]['seconds']} s", flush=True)
            SUMMARY.write_text(json.dumps(summary, indent=1) + "\n")
    pbe = reference_curve("pbe", ("C", "C"))
    curves = {"PBE (PySCF)": (pbe.distance, pbe.energy)}
    labeller = dimer_curve("sevennet-0", ("C", "C"), DISTANCES, label="SevenNet-0 (the labeller)", forces=False)
    curves["SevenNet-0 (the labeller)"] = (labeller.distance, labeller.energy)
    for key in fits:
        curve = dimer_curve(RUNS / f"{key}.pt", ("C", "C"), DISTANCES, label=key, forces=False)
        curves[key] = (curve.distance, curve.energy)
    summary["wells"] = {label: well(*c) for label, c in curves.items()}
    summary["dimer_curves"] = {label: {"distance_A": c[0].tolist(), "energy_eV": c[1].tolist()} for label, c in curves.items()}
    SUMMARY.write_text(json.dumps(summary, indent=1) + "\n")
    figure(curves)
    for label, w in summary["wells"].items():
        print(f"{label:28s} well {w['depth_eV']:8.3f} eV at {w['position_A']:.3f} A")


def figure(curves: dict) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    colours = {2: "tab:blue", 3: "tab:orange", 4: "tab:green"}
    for ax, makeup, title in zip(fig.subplots(1, 2), ("pbe-dimers", "diverse"),
                                 ("fitted on PBE dimers only", "fitted on condensed carbon (SevenNet-0 labels), no dimers")):
        ax.plot(*curves["PBE (PySCF)"], "k--", lw=2, label="PBE (PySCF)")
        ax.plot(*curves["SevenNet-0 (the labeller)"], color="0.5", ls=":", lw=2, label="SevenNet-0 (the labeller)")
        for K in (2, 3, 4):
            key = f"{makeup}-k{K}"
            if key in curves:
                ax.plot(*curves[key], color=colours[K], label=f"linear K = {K}")
        ax.set_xlim(0.8, 5.0)
        ax.set_ylim(-12, 8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"C-C dimer, {title}", fontsize=10)
        ax.set_xlabel("distance (A)")
        ax.set_ylabel("$\\epsilon_2$ (eV)")
        ax.legend(fontsize=8)
    fig.savefig(FIGURE, dpi=110)
    print("wrote", FIGURE)


if __name__ == "__main__":
    main()

"""Experiment 1 of the explicit-body-order issue, read out: the linear models of
``hydrogen_fits.py`` (three makeups x K = 2, 3, 4; "K = 4-e": fitted to energies alone) and SOAP-BPNN trained with and without
dimers (``soap_bpnn_dimers.sh``), against FCI/STO-3G.

- dimer curves of every model beside FCI's (as ``ase-bodyorder curves --reference fci``
  draws them), with each well's depth and position;
- dE_k, k = 2..8, of the shipped held-out H8 clusters (every subcluster's FCI energy
  ships with the package; as ``ase-bodyorder compare`` gives them), per density;
- each model's errors on the held-out test split (per-atom energy, per density);
- the exactness of the expansion (experiment 3): |E - E^(K)| per atom beside the
  implicit shipped models on the same clusters.

Writes ``docs/data/linear_h_experiments.json`` and ``docs/figures/linear_h.png``.
Models not there yet are skipped (and said so). Usage:

    python training/linear/hydrogen_analysis.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "training" / "runs"
OUTPUT = ROOT / "docs" / "data" / "linear_h_experiments.json"
FIGURE = ROOT / "docs" / "figures" / "linear_h.png"
MAKEUPS = ("all", "no-dimers", "dimers")
IMPLICIT = ("pet-h-fci", "mace-h-fci", "soap-bpnn-h-fci")
DISTANCES = np.linspace(0.5, 4.5, 161)
#: the fits of hydrogen_fits.py: K = 2, 3 on energies and forces, K = 4 on energies alone
#: ("4-e", every makeup) and on energies and forces ("4", the whole pool: the shipped one)
VARIANTS = ("2", "3", "4-e", "4")
COLOURS = {"2": "tab:blue", "3": "tab:orange", "4-e": "tab:green", "4": "tab:red"}


def models() -> dict[str, Path]:
    """label -> model file, of what exists."""
    found = {}
    for makeup in MAKEUPS:
        for variant in VARIANTS:
            path = RUNS / "linear-h" / f"{makeup}-k{variant}.pt"
            if path.exists():
                found[f"linear {makeup} K={variant}"] = path
    for makeup in ("with", "without"):
        path = RUNS / "soap-bpnn-dimers" / makeup / "model.pt"
        if path.exists():
            found[f"SOAP-BPNN {makeup} dimers"] = path
    return found


def well(curve) -> dict:
    i = int(np.argmin(curve.energy))
    return {"depth_eV": float(curve.energy[i]), "position_A": float(curve.distance[i])}


def test_split_errors(path: Path, frames) -> dict:
    """Per density: energy and force RMSEs of the plain model, with metatomic's own
    calculator (training/model_card.py, as every shipped card)."""
    import sys

    sys.path.insert(0, str(ROOT / "training"))
    from model_card import errors

    return errors(path, frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ase_bodyorder.analysis import dimer_curve
    from ase_bodyorder.compare import compare_expansions, model_expansions, shipped_clusters
    from ase_bodyorder.fci import FCICalculator

    found = models()
    missing = [f"linear {m} K={v}" for m in MAKEUPS for v in VARIANTS if f"linear {m} K={v}" not in found]
    if missing:
        print("not fitted yet (skipped):", ", ".join(missing))
    fci = dimer_curve(FCICalculator(), distances=DISTANCES, label="FCI/STO-3G", forces=False)
    curves = {label: dimer_curve(path, distances=DISTANCES, label=label, forces=False) for label, path in found.items()}
    clusters = shipped_clusters()
    import ase.io

    test = ase.io.read(ROOT / "tests/data/fci_test_split.extxyz", ":")
    comparison = compare_expansions(clusters, list(found.values()), "shipped", max_order=8, labels=list(found))
    summary = {
        "fci_well": well(fci),
        "wells": {label: well(c) for label, c in curves.items()},
        "dimer_curves": {"distance_A": DISTANCES.tolist(), "FCI/STO-3G": fci.energy.tolist(),
                         **{label: c.energy.tolist() for label, c in curves.items()}},
        "mean_dE_k_meV_per_atom": {
            "reference": {g: v.mean(axis=0).tolist() for g, v in comparison.reference.items()},
            **{label: {g: v.mean(axis=0).tolist() for g, v in groups.items()}
               for label, groups in comparison.models.items()},
        },
        "test_split_errors": {label: test_split_errors(path, test) for label, path in found.items()},
        "exactness": exactness(clusters, {**{k: v for k, v in found.items() if k.startswith("linear all")},
                                          **{name: name for name in IMPLICIT}}, model_expansions),
    }
    OUTPUT.write_text(json.dumps(summary, indent=1) + "\n")
    figure(fci, curves, comparison)
    print_tables(summary)


def exactness(clusters, chosen: dict, model_expansions) -> dict:
    """max over clusters of |E - E^(K)| per atom (meV/atom), K = 1..7: the tail of dE_k
    beyond K (sum over k of dE_k at K = n is the model's energy, an identity)."""
    out = {}
    for label, model in chosen.items():
        values = model_expansions(clusters, model, max_order=8)
        tails = np.array([[abs(v[K:].sum()) / len(a) for K in range(1, 8)] for v, a in zip(values, clusters)])
        out[label] = (1000 * tails.max(axis=0)).tolist()
    return out


def figure(fci, curves: dict, comparison) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8), layout="constrained")
    axes = fig.subplots(2, 3)
    soap = {"all": "SOAP-BPNN with dimers", "no-dimers": "SOAP-BPNN without dimers"}
    for ax, makeup in zip(axes[0], MAKEUPS):
        ax.plot(fci.distance, fci.energy, "k--", lw=2, label="FCI/STO-3G")
        for v in VARIANTS:
            label = f"linear {makeup} K={v}"
            if label in curves:
                ax.plot(curves[label].distance, curves[label].energy, color=COLOURS[v], label=f"linear K = {v}")
        if soap.get(makeup) in curves:
            c = curves[soap[makeup]]
            ax.plot(c.distance, c.energy, color="tab:purple", ls=":", lw=2, label=c.label)
        ax.set_ylim(-6, 4)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"H-H dimer, fitted on: {makeup}")
        ax.set_xlabel("distance (A)")
        ax.set_ylabel("$\\epsilon_2$ (eV)")
        ax.legend(fontsize=8)
    orders = np.arange(2, 9)
    for ax, makeup in zip(axes[1], MAKEUPS):
        for group, marker in (("low", "o"), ("high", "s")):
            reference = comparison.reference[group].mean(axis=0)[1:]
            ax.plot(orders, reference, "k" + marker + "--", label=f"FCI ({group} density)")
            for v in VARIANTS:
                label = f"linear {makeup} K={v}"
                if label in comparison.models:
                    ax.plot(orders, comparison.models[label][group].mean(axis=0)[1:], marker=marker, color=COLOURS[v],
                            ls="-" if group == "high" else ":", label=f"K = {v} ({group})")
            if soap.get(makeup) in comparison.models:
                ax.plot(orders, comparison.models[soap[makeup]][group].mean(axis=0)[1:], marker=marker,
                        color="tab:purple", ls="-" if group == "high" else ":", label=f"SOAP-BPNN ({group})")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"mean $\\Delta E_k$ of the held-out H$_8$ clusters, fitted on: {makeup}")
        ax.set_xlabel("body order k")
        ax.set_ylabel("$\\Delta E_k$ (meV/atom)")
        ax.legend(fontsize=6, ncol=2)
    fig.savefig(FIGURE, dpi=110)
    print("wrote", FIGURE)


def print_tables(summary: dict) -> None:
    print(f"FCI well: {summary['fci_well']}")
    for label, w in summary["wells"].items():
        errors = summary["test_split_errors"][label]
        print(f"{label:28s} well {w['depth_eV']:8.3f} eV at {w['position_A']:.3f} A | test RMSE "
              f"low {errors['low']['energy_rmse_meV_per_atom']:8.1f} high {errors['high']['energy_rmse_meV_per_atom']:8.1f} meV/atom")
    for label, values in summary["mean_dE_k_meV_per_atom"].items():
        for group, v in values.items():
            print(f"dE_k {label:28s} {group:5s}", " ".join(f"{x:9.2f}" for x in v[1:]))
    for label, v in summary["exactness"].items():
        print(f"|E - E^(K)| {label:28s}", " ".join(f"{x:9.2e}" for x in v))


if __name__ == "__main__":
    main()

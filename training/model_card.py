"""Evaluate an exported model on the held-out FCI split and write its model card.

The errors are computed with metatomic's own ASE calculator (not ase-bodyorder), per
density, plus the isolated-atom error. Usage:

    python training/model_card.py NAME MODEL.pt OPTIONS.yaml [MORE.yaml ...] --architecture "PET ..."

A model trained in stages (training/<arch>/stages) passes every stage's options file, in order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path

import ase
import ase.io
import numpy as np

from ase_bodyorder.backends.metatomic import load_model

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
FCI_H_ATOM_EV = -0.46658184955727533 * 27.211386245988  # ROHF = FCI for one electron


def errors(model_path: Path, frames: list[ase.Atoms]) -> dict:
    from metatomic_ase import MetatomicCalculator

    calculator = MetatomicCalculator(load_model(model_path))
    results = calculator.compute_energy(frames, compute_forces_and_stresses=True)
    out = {}
    for density in ("low", "high"):
        chosen = [i for i, a in enumerate(frames) if a.info["set"] == f"cluster_{density}"]
        de = np.array([(results["energy"][i] - frames[i].get_potential_energy()) / len(frames[i]) for i in chosen])
        df = np.concatenate([(results["forces"][i] - frames[i].get_forces()).ravel() for i in chosen])
        out[density] = {
            "n_structures": len(chosen),
            "energy_rmse_meV_per_atom": float(1000 * np.sqrt(np.mean(de**2))),
            "energy_mae_meV_per_atom": float(1000 * np.mean(np.abs(de))),
            "force_rmse_eV_per_A": float(np.sqrt(np.mean(df**2))),
            "force_mae_eV_per_A": float(np.mean(np.abs(df))),
        }
    atom = calculator.compute_energy(ase.Atoms("H"))
    out["isolated_atom_error_meV"] = float(1000 * (float(atom["energy"]) - FCI_H_ATOM_EV))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("model", type=Path)
    parser.add_argument("options", type=Path, nargs="+", help="the options file of every training stage, in order")
    parser.add_argument("--architecture", required=True)
    parser.add_argument("--training-notes", default="")
    parser.add_argument(
        "--trained-on-first",
        type=int,
        default=None,
        help="the model was trained on the first N structures of the pool (an earlier, smaller pool)",
    )
    args = parser.parse_args()

    model = load_model(args.model)
    capabilities = model.capabilities()
    cutoffs = [o.engine_cutoff("angstrom") for o in model.requested_neighbor_lists()]
    test = ase.io.read(ROOT / "tests/data/fci_test_split.extxyz", ":")
    pool = ase.io.read(ROOT / "data/fci_h_clusters.extxyz", ":")[: args.trained_on_first]
    splits = {s: sum(a.info["split"] == s for a in pool) for s in ("train", "val", "test")}
    card = {
        "name": args.name,
        # the architecture line may already name the dtype
        "summary": f"{args.architecture} for hydrogen clusters, FCI/STO-3G"
        + ("" if capabilities.dtype in args.architecture else f", {capabilities.dtype}"),
        "architecture": args.architecture,
        "trained_with": "metatrain",
        "options": "\n".join(path.read_text() for path in args.options),
        "training_notes": args.training_notes,
        "data": {
            "file": "data/fci_h_clusters.extxyz (script: scripts/generate_fci_references.py)"
            + (f", its first {args.trained_on_first} structures" if args.trained_on_first else ""),
            "level_of_theory": "FCI/STO-3G (PySCF), lowest Sz sector: ground state over spin states",
            "content": "isolated H atom; H2 dimers 0.5-4 A; H3-H8 clusters at low (0.02-0.05 A^-3) "
            "and high (0.1-0.2 A^-3) density, minimum distance 0.6 A",
            "splits": splits,
            "test_split": f"tests/data/fci_test_split.extxyz: every test structure of the whole pool ({len(test)} held-out "
            "clusters of 3-8 atoms, among them the 1200 dense clusters of heldout_test_clusters); errors_on_test_split is over all of it",
        },
        "dtype": capabilities.dtype,
        "cutoff_A": max(cutoffs),
        "interaction_range_A": capabilities.interaction_range,
        "atomic_types": list(capabilities.atomic_types),
        "errors_on_test_split": errors(args.model, test),
        "file_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
        "file_size_bytes": args.model.stat().st_size,
    }
    out = args.model.with_suffix(".json")
    out.write_text(json.dumps(card, indent=1))
    print(json.dumps(card["errors_on_test_split"], indent=1))


if __name__ == "__main__":
    main()

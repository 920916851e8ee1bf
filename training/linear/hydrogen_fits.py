"""Linear body-ordered models on three makeups of the shipped FCI hydrogen pool
(issue: explicit body order; arXiv 2502.16125's design on arXiv 2509.14146's system).

The makeups, all from the pool's training and validation splits (its test split, the
clusters every shipped model is judged on, is held out of every fit):

- ``all``: every structure (the isolated atom, the dimers, the clusters of 3-8 atoms);
- ``no-dimers``: the clusters of 3 to 8 atoms only;
- ``dimers``: the dimers only.

Each makeup is fitted at K = 2, 3 and 4 with ``fit_linear_model`` (energies and forces,
its defaults: the regularisation chosen on 10% of the structures held out at random).
The models go to ``training/runs/linear-h/<makeup>-k<K>.pt`` (with their cards), a
summary to ``docs/data/linear_h_fits.json``; the ``all`` fits are the shipped
``linear-h-fci-k2``, ``-k3`` and ``-k4`` (``--ship`` copies them into the package).
A fit whose model exists is not redone (delete it to refit). Usage:

    python training/linear/hydrogen_fits.py [--threads 1] [--ship]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POOL = ROOT / "data" / "fci_h_clusters.extxyz"
RUNS = ROOT / "training" / "runs" / "linear-h"
SUMMARY = ROOT / "docs" / "data" / "linear_h_fits.json"
MODELS = ROOT / "ase_bodyorder" / "models"
MAKEUPS = {
    "all": lambda n: True,
    "no-dimers": lambda n: 3 <= n <= 8,
    "dimers": lambda n: n == 2,
}


def write_makeups() -> dict[str, Path]:
    """One extxyz per makeup (training and validation splits of the pool)."""
    import ase.io

    pool = [a for a in ase.io.read(POOL, ":") if a.info["split"] != "test"]
    RUNS.mkdir(parents=True, exist_ok=True)
    files = {}
    for makeup, keep in MAKEUPS.items():
        files[makeup] = RUNS / f"{makeup}.extxyz"
        ase.io.write(files[makeup], [a for a in pool if keep(len(a))])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ship", action="store_true", help="copy the 'all' fits into the package")
    parser.add_argument("--makeups", nargs="+", default=list(MAKEUPS), choices=list(MAKEUPS))
    parser.add_argument("--k4-energies", action="store_true",
                        help="fit K = 4 to energies alone (model <makeup>-k4-e): its force rows take one "
                        "backward pass per nu = 3 feature, about an hour of one core on this pool")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ase_bodyorder.linear import fit_linear_model

    files = write_makeups()
    summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    for makeup in args.makeups:
        data = files[makeup]
        for K in (2, 3, 4):
            forces = not (K == 4 and args.k4_energies)
            key = f"{makeup}-k{K}" + ("" if forces else "-e")
            output = RUNS / f"{key}.pt"
            if output.exists() and key in summary:
                continue
            start = time.perf_counter()
            name = f"linear-h-fci-k{K}" if makeup == "all" and forces else f"linear-h-{key}"
            result = fit_linear_model(data, K, output, overwrite=True, name=name, forces=forces)
            summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}  # another run may have added
            summary[key] = {
                "makeup": makeup, "K": K, "forces": forces, "seconds": round(time.perf_counter() - start, 1),
                "threads": args.threads, "regularisation": result.regularisation, "errors": result.errors,
            }
            print(key, json.dumps(summary[key]["errors"]["validation"]), f"{summary[key]['seconds']} s", flush=True)
            SUMMARY.parent.mkdir(parents=True, exist_ok=True)
            SUMMARY.write_text(json.dumps(summary, indent=1) + "\n")
    if args.ship:
        for K in (2, 3, 4):
            ship(RUNS / f"all-k{K}.pt", f"linear-h-fci-k{K}")


def ship(model: Path, name: str) -> None:
    """Copy a fit into the package as ``name`` with a card that says what it was fitted on."""
    import ase.io

    card = json.loads(model.with_suffix(".json").read_text())
    card["name"] = name
    card["data"] = {
        "file": "data/fci_h_clusters.extxyz (script: scripts/generate_fci_references.py), its train and val "
                "splits; the test split (tests/data/fci_test_split.extxyz) held out",
        "level_of_theory": "FCI/STO-3G (PySCF), lowest Sz sector: ground state over spin states",
        "fit_files_sha256": [d["sha256"] for d in card["data"]],
        "script": "training/linear/hydrogen_fits.py",
    }
    card["summary"] = f"linear, body order {card['max_order']}, for hydrogen clusters, FCI/STO-3G"
    target = MODELS / f"{name}.pt"
    shutil.copyfile(model, target)
    # the errors every shipped model's card gives, computed as for the others: metatomic's
    # own calculator on the committed test split (training/model_card.py)
    sys.path.insert(0, str(ROOT / "training"))
    from model_card import errors

    card["errors_on_test_split"] = errors(target, ase.io.read(ROOT / "tests/data/fci_test_split.extxyz", ":"))
    card["file_sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    card["file_size_bytes"] = target.stat().st_size
    (MODELS / f"{name}.json").write_text(json.dumps(card, indent=1) + "\n")
    print("shipped", name)


if __name__ == "__main__":
    main()

"""Rebuild a metatrain checkpoint that holds the weights of an exported (shipped) model.

metatrain fine-tunes from checkpoints (``finetune.read_from``), which are not shipped:
only the exported ``.pt`` is. This writes a checkpoint whose model (latest and best) is
the exported model's, taking everything else (architecture hypers, dataset info) from a
template checkpoint of the same architecture, e.g. a one-epoch run of the same options:

    mtt train ../../../pet/options.yaml -o model.pt -r architecture.training.num_epochs=1
    python training/checkpoint_from_export.py TEMPLATE.ckpt ase_bodyorder/models/pet-h-fci.pt OUT.ckpt

It then reloads OUT.ckpt as metatrain would and checks that it predicts the exported
model's energies and forces on every fifth cluster of the committed test split (294 of
both densities and every size) to round-off.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import ase.io
import numpy as np
import torch

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path, help="a checkpoint of the same architecture and hypers")
    parser.add_argument("exported", type=Path, help="the exported model whose weights to take")
    parser.add_argument("output", type=Path)
    args = parser.parse_args()

    from metatomic.torch import load_atomistic_model
    from metatrain.utils.io import model_from_checkpoint

    checkpoint = torch.load(args.template, weights_only=False, map_location="cpu")
    weights = load_atomistic_model(str(args.exported)).module.state_dict()
    differing = (set(checkpoint["best_model_state_dict"]) - {"finetune_config"}) ^ set(weights)
    if differing:
        raise ValueError(f"{args.exported} does not match the template's architecture: {sorted(differing)[:5]}")
    # an empty finetune_config leaves every parameter trainable, as full fine-tuning does
    state = {**weights, "finetune_config": {}}
    checkpoint["model_state_dict"] = state
    checkpoint["best_model_state_dict"] = dict(state)
    for key in ("optimizer_state_dict", "scheduler_state_dict", "best_optimizer_state_dict"):
        checkpoint[key] = None  # the template's optimizer state belongs to other weights
    torch.save(checkpoint, args.output)

    rebuilt = model_from_checkpoint(torch.load(args.output, weights_only=False), context="finetune")
    rebuilt_path = args.output.with_suffix(".check.pt")
    rebuilt.export().save(str(rebuilt_path))
    from metatomic_ase import MetatomicCalculator

    # every fifth cluster: both densities and every size, at a fifth of the cost
    frames = ase.io.read(ROOT / "tests/data/fci_test_split.extxyz", "::5")
    shipped, copy = (
        MetatomicCalculator(str(p)).compute_energy(frames, compute_forces_and_stresses=True)
        for p in (args.exported, rebuilt_path)
    )
    de = np.max(np.abs(np.array(shipped["energy"]) - np.array(copy["energy"])))
    df = max(np.max(np.abs(a - b)) for a, b in zip(shipped["forces"], copy["forces"]))
    rebuilt_path.unlink()
    print(f"{args.output}: max |dE| {de:.2e} eV, max |dF| {df:.2e} eV/A over {len(frames)} test clusters")
    if de > 1e-8 or df > 1e-8:
        raise SystemExit("the rebuilt checkpoint does not reproduce the exported model")


if __name__ == "__main__":
    main()

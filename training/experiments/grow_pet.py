"""Deepen a trained PET checkpoint to a fine-tune's architecture without changing its predictions.

Adds attention layers at the end of each GNN layer's transformer, initialised so that
each new layer is the identity: PET's pre-LN transformer layers are residual, so zeroing
the layers that write into the residual streams (the attention's output projection, the
edge feed-forward's output, the node expansion and the node feed-forward's output) makes
a new layer add exactly zero, while its other weights keep their random initialisation so
that gradients reach them once training moves the zeroed ones (as in ReZero and Fixup).
Fine-tuning the grown checkpoint then starts from the trained model's predictions with
more capacity, instead of from scratch.

    python experiments/grow_pet.py runs/pet/finetune2/model.ckpt experiments/pet-deepen.yaml runs/pet/deepen/start.ckpt

The architecture comes from the options file's ``architecture.model`` section: every
hyper must match the checkpoint's except ``num_attention_layers``, which must grow. The grown checkpoint is checked
against the original on the committed test split: the predictions must agree to
round-off (they agree exactly: the new layers add zeros). Used for the attempt in
pet-deepen.yaml (README, attempts table), which did not beat the shipped model.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import ase.io
import numpy as np
import metatomic.torch  # noqa: F401  (registers the classes that checkpoints hold)
import torch
import yaml

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]

# the parameters of a new layer that write into the residual streams; zero makes it the identity
ZEROED = ("attention.output_linear", "mlp.w_out", "center_expansion", "center_mlp.w_out")


def attention_layers_to_add(checkpoint: dict, model_options: dict) -> int:
    """How many attention layers per GNN layer the options add to the checkpoint's model."""
    hypers = checkpoint["model_data"]["model_hypers"]
    unknown = set(model_options) - set(hypers)
    if unknown:
        raise ValueError(f"the options name model hypers that PET does not have: {sorted(unknown)}")
    differing = {k for k, v in model_options.items() if hypers[k] != v} - {"num_attention_layers"}
    if differing:
        raise ValueError(f"only num_attention_layers can grow; the options change {sorted(differing)}")
    added = model_options.get("num_attention_layers", hypers["num_attention_layers"]) - hypers["num_attention_layers"]
    if added <= 0:
        raise ValueError("the options add no attention layers to the checkpoint's; there is nothing to grow")
    return added


def grow(checkpoint: dict, attention_layers: int, seed: int) -> dict:
    """Return a copy of ``checkpoint`` with ``attention_layers`` identity-initialised layers per GNN layer."""
    from metatrain.pet import __model__ as PET

    hypers = dict(checkpoint["model_data"]["model_hypers"])
    old_layers = hypers["num_attention_layers"]
    if hypers["transformer_type"] != "PreLN":
        raise ValueError("only pre-LN transformer layers are residual, so only they can grow as the identity")
    hypers["num_attention_layers"] = attention_layers
    old_state = {k: v for k, v in checkpoint["best_model_state_dict"].items() if k != "finetune_config"}

    torch.manual_seed(seed)
    model = PET(hypers=hypers, dataset_info=checkpoint["model_data"]["dataset_info"])
    dtype = next(v.dtype for v in old_state.values() if v.is_floating_point())
    state = model.to(dtype).state_dict()
    missing = set(old_state) - set(state)
    if missing:
        raise ValueError(f"the grown model lacks keys of the checkpoint: {sorted(missing)[:5]}")
    for key, value in old_state.items():
        state[key] = value.clone()
    new_keys = set(state) - set(old_state)
    for key in new_keys:
        layer = int(key.split(".trans.layers.")[1].split(".")[0]) if ".trans.layers." in key else None
        if layer is None or layer < old_layers:
            raise ValueError(f"growing added an unexpected parameter: {key}")
        if any(f".trans.layers.{layer}.{name}." in key for name in ZEROED):
            state[key] = torch.zeros_like(state[key])
    state["finetune_config"] = {}  # every parameter trainable, as full fine-tuning does

    grown = dict(checkpoint)
    grown["model_data"] = {**checkpoint["model_data"], "model_hypers": hypers}
    grown["model_state_dict"] = state
    grown["best_model_state_dict"] = dict(state)
    for key in ("optimizer_state_dict", "scheduler_state_dict", "best_optimizer_state_dict"):
        grown[key] = None  # the optimizer state belongs to the smaller model
    return grown


def predictions(checkpoint_path: Path, frames: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies and forces of a checkpoint's best model, exported as metatrain exports it."""
    from metatomic_ase import MetatomicCalculator
    from metatrain.utils.io import model_from_checkpoint

    model = model_from_checkpoint(torch.load(checkpoint_path, weights_only=False), context="finetune")
    exported = checkpoint_path.with_suffix(".check.pt")
    model.export().save(str(exported))
    results = MetatomicCalculator(str(exported)).compute_energy(frames, compute_forces_and_stresses=True)
    exported.unlink()
    return np.array(results["energy"]), results["forces"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a metatrain PET checkpoint (its best model is grown)")
    parser.add_argument("options", type=Path, help="the metatrain options file of the fine-tune to start")
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=20261123, help="seed of the new layers' random weights")
    args = parser.parse_args()
    if args.output.exists():
        raise SystemExit(f"{args.output} exists; remove it first")

    checkpoint = torch.load(args.checkpoint, weights_only=False, map_location="cpu")
    model_options = yaml.safe_load(args.options.read_text())["architecture"].get("model", {})
    added = attention_layers_to_add(checkpoint, model_options)
    torch.save(grow(checkpoint, model_options["num_attention_layers"], args.seed), args.output)

    frames = ase.io.read(ROOT / "tests/data/fci_test_split.extxyz", ":")
    (e0, f0), (e1, f1) = (predictions(p, frames) for p in (args.checkpoint, args.output))
    de = np.max(np.abs(e0 - e1))
    df = max(np.max(np.abs(a - b)) for a, b in zip(f0, f1))
    print(f"{args.output}: grown by {added} attention layer(s) per GNN layer; max |dE| {de:.2e} eV, max |dF| {df:.2e} eV/A over {len(frames)} test clusters")
    if de > 1e-8 or df > 1e-8:
        raise SystemExit("the grown checkpoint does not reproduce the original model")


if __name__ == "__main__":
    main()

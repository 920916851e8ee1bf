"""The fitted linear model as a metatomic model: per-atom energies from the body-ordered
features, one weight vector per correlation order and centre species, plus a constant
per species (the isolated atom's energy: its features are all zero)."""


import json
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..torch_compat import plain_index_select

with plain_index_select():  # any import order with torch_geometric (torch_compat.py)
    from metatensor.torch import Labels, TensorBlock, TensorMap
    from metatomic.torch import (
        AtomisticModel,
        ModelCapabilities,
        ModelMetadata,
        ModelOutput,
        NeighborListOptions,
        System,
    )

from .descriptors import BodyOrderedFeatures

__all__ = ["LinearBodyOrderModel", "save_model"]


class LinearBodyOrderModel(torch.nn.Module):
    """E_i = bias[Z_i] + sum over orders nu of w[nu][Z_i] . x_i^(nu)."""

    def __init__(self, features: BodyOrderedFeatures, species: List[int], weights: List[torch.Tensor],
                 bias: torch.Tensor):
        super().__init__()
        self.features = features
        self.species = species
        # atomic number -> row of the weights
        index = torch.full((max(species) + 1,), -1, dtype=torch.int64)
        index[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("species_index", index)
        self.register_buffer("bias", bias.to(torch.float64))
        # one buffer for all orders (TorchScript indexes no ParameterList by a variable):
        # (orders, species, most features), each order's own features first
        self.n_features = [int(w.shape[1]) for w in weights]
        padded = torch.zeros(len(weights), len(species), max(self.n_features), dtype=torch.float64)
        for order, w in enumerate(weights):
            padded[order, :, : w.shape[1]] = w
        self.register_buffer("weights", padded)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self.features.requested_neighbor_lists()

    def atomic_energies(self, systems: List[System]) -> torch.Tensor:
        """Every atom's energy, the atoms of all systems one after the other."""
        sizes = [len(s) for s in systems]
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.int64).cumsum(0)
        types = torch.cat([s.types for s in systems]).to(torch.int64)
        energies = self.bias[self.species_index[types]].clone()
        for order, features in enumerate(self.features(systems)):
            for key, block in features.items():
                weights = self.weights[order, self.species_index[int(key["center_type"])], : self.n_features[order]]
                values = block.values.reshape(block.values.shape[0], -1)
                where = offsets[block.samples.column("system").to(torch.int64)] + block.samples.column("atom").to(torch.int64)
                energies = energies.index_add(0, where, values @ weights)
        return energies

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        if "energy" not in outputs:
            return {}
        energies = self.atomic_energies(systems)
        device = energies.device
        system = torch.cat([torch.full((len(s),), i, dtype=torch.int32, device=device) for i, s in enumerate(systems)])
        atom = torch.cat([torch.arange(len(s), dtype=torch.int32, device=device) for s in systems])
        samples = Labels(["system", "atom"], torch.stack([system, atom], dim=1))
        if selected_atoms is not None:
            keep = samples.select(selected_atoms)
            energies, samples = energies[keep], Labels(["system", "atom"], samples.values[keep])
        if outputs["energy"].sample_kind == "atom":
            values = energies.reshape(-1, 1)
        else:
            total = torch.zeros(len(systems), dtype=energies.dtype, device=device)
            values = total.index_add(0, samples.column("system").to(torch.int64), energies).reshape(-1, 1)
            samples = Labels(["system"], torch.arange(len(systems), dtype=torch.int32, device=device).reshape(-1, 1))
        block = TensorBlock(values=values, samples=samples, components=[],
                            properties=Labels(["energy"], torch.tensor([[0]], device=device)))
        return {"energy": TensorMap(Labels(["_"], torch.tensor([[0]], device=device)), [block])}


def save_model(model: LinearBodyOrderModel, path: Path, cutoff: float, card: dict) -> None:
    """Write ``model`` as a metatomic model (its featomic-torch extension declared) and
    its card (``path`` with ``.json``)."""
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="atom")},
        atomic_types=list(model.species),
        interaction_range=float(cutoff),
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    metadata = ModelMetadata(
        name=card["name"],
        description=f"linear model of body order {card['max_order']} on featomic's body-ordered "
        "density correlations (centre density excluded), fitted by ase-bodyorder",
        references={"architecture": ["https://arxiv.org/abs/2502.16125"]},
    )
    partial = path.with_name(path.name + ".partial")
    try:
        with plain_index_select():  # sevenn may have replaced torch.index_select
            AtomisticModel(model.eval(), metadata, capabilities).save(str(partial))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    path.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")

"""Body-ordered descriptors of the neighbour density (featomic), with the centre's own
density left out (``center_atom_weight = 0``), so that a linear model on them has an
exact body order (docs/linear.md):

- correlation order nu = 1, the radial spectrum: 2-body;
- nu = 2, the power spectrum: at most 3-body;
- nu = 3, invariant three-density correlations (featomic's Clebsch-Gordan
  ``DensityCorrelations`` of the spherical expansion, o3_lambda = 0): at most 4-body.

A model of body order K uses every nu <= K - 1. :class:`BodyOrderedFeatures` is a
TorchScript module: the same code computes the features while fitting (with their
position gradients) and inside the exported model.
"""


from typing import Dict, List, Tuple

import torch

from ..torch_compat import plain_index_select

with plain_index_select():  # any import order with torch_geometric (torch_compat.py)
    from featomic.torch import SoapPowerSpectrum, SoapRadialSpectrum, SphericalExpansion
    from featomic.torch.clebsch_gordan import DensityCorrelations
    from metatensor.torch import Labels, TensorMap
    from metatomic.torch import NeighborListOptions, System

__all__ = ["BodyOrderedFeatures", "block_rows", "default_hypers"]

#: radial and angular resolution of each correlation order (nu: (max_radial, max_angular));
#: the higher orders are coarser, because their number of features grows as n^nu
_RESOLUTION = {1: (10, 0), 2: (6, 4), 3: (3, 2)}


def default_hypers(max_order: int, cutoff: float, smoothing: float = 0.5, width: float = 0.3) -> Dict[str, dict]:
    """featomic hyperparameters of every correlation order nu = 1..K-1, by nu as text."""
    hypers = {}
    for nu in range(1, max_order):
        max_radial, max_angular = _RESOLUTION[nu]
        hypers[str(nu)] = {
            "cutoff": {"radius": float(cutoff), "smoothing": {"type": "ShiftedCosine", "width": float(smoothing)}},
            # the centre's own density would add terms of one more body to each order
            "density": {"type": "Gaussian", "width": float(width), "center_atom_weight": 0.0},
            "basis": {"type": "TensorProduct", "max_angular": max_angular,
                      "radial": {"type": "Gto", "max_radial": max_radial}},
        }
        if nu == 1:  # the radial spectrum has no angular basis
            hypers[str(nu)]["basis"] = {"radial": {"type": "Gto", "max_radial": max_radial}}
    return hypers


class BodyOrderedFeatures(torch.nn.Module):
    """Per-atom features of every correlation order nu < K, as (values, system, atom,
    center type) per order; each order's blocks are in featomic's order (by centre
    species), with the neighbour species moved to properties over every species the
    model knows, so that the columns do not depend on the structure."""

    def __init__(self, max_order: int, species: List[int], hypers: Dict[str, dict]):
        super().__init__()
        if not 2 <= max_order <= 4:
            raise ValueError(f"body order K must be 2, 3 or 4, got {max_order}")
        self.max_order = max_order
        self.radial = SoapRadialSpectrum(**hypers["1"])
        self.has_power = max_order >= 3
        self.has_triple = max_order >= 4
        # the smallest basis as a placeholder keeps TorchScript's attribute types fixed
        # whichever K is used (it is never computed)
        smallest = {**hypers["1"], "basis": {"type": "TensorProduct", "max_angular": 0,
                                             "radial": {"type": "Gto", "max_radial": 0}}}
        self.power = SoapPowerSpectrum(**(hypers["2"] if self.has_power else smallest))
        self.expansion = SphericalExpansion(**(hypers["3"] if self.has_triple else smallest))
        max_angular = int(hypers["3"]["basis"]["max_angular"]) if self.has_triple else 0
        self.correlations = DensityCorrelations(n_correlations=2, max_angular=3 * max_angular, dtype=torch.float64)
        types = torch.tensor(species, dtype=torch.int32)
        self.neighbor_types = Labels(["neighbor_type"], types.reshape(-1, 1))
        pairs = torch.tensor([[a, b] for a in species for b in species if a <= b], dtype=torch.int32)
        self.neighbor_pairs = Labels(["neighbor_1_type", "neighbor_2_type"], pairs)
        self.invariant = Labels(["o3_lambda", "o3_sigma"], torch.tensor([[0, 1]], dtype=torch.int32))

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self.radial.requested_neighbor_lists()

    def orders(self) -> List[int]:
        """The correlation orders nu this module computes."""
        return list(range(1, self.max_order))

    def forward(self, systems: List[System], gradients: bool = False) -> List[TensorMap]:
        """Each order's features (``gradients``: with featomic's own position gradients,
        for the orders that have them, nu <= 2)."""
        wanted: List[str] = ["positions"] if gradients else []
        out = [self.radial(systems, gradients=wanted).keys_to_properties(self.neighbor_types)]
        if self.has_power:
            out.append(self.power(systems, gradients=wanted).keys_to_properties(self.neighbor_pairs))
        if self.has_triple:
            density = self.expansion(systems).keys_to_properties(self.neighbor_types)
            triple = self.correlations.compute(density, selected_keys=self.invariant)
            # one block per angular channel and centre species: join the channels
            out.append(triple.keys_to_properties(["o3_lambda", "o3_sigma", "l_1", "l_2", "k_2", "l_3"]))
        return out


def block_rows(features: TensorMap) -> List[Tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(center type, values (n, f), system index (n), atom index (n)) of every block of
    one order's features; values flattened over components (the invariants have one)."""
    rows = []
    for key, block in features.items():
        center = int(key["center_type"])
        values = block.values.reshape(block.values.shape[0], -1)
        rows.append((center, values, block.samples.column("system"), block.samples.column("atom")))
    return rows

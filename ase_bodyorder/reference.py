"""Reference potentials of known body order, for tests, teaching and benchmarks.

One torch implementation serves three uses: a packed backend
(:class:`ReferenceBackend`), an ASE calculator (:class:`ReferenceCalculator`) and an
exported TorchScript metatomic model (:func:`export_reference_model`), so that every
evaluation path can be checked against the same exact answers.

Terms (all with a C2-smooth cutoff ``fc(r) = (1 - (r/rc)^2)^3`` for r < rc):

- ``one``: a constant per species (1-body);
- ``pair``: Morse pairs times fc (2-body);
- ``triple``: a Stillinger-Weber-like angular term centred on each atom,
  ``lambda fc(r_ij) fc(r_ik) (cos theta_jik + 1/3)^2`` (3-body, needs two edges only);
- ``embedding``: EAM-like ``-A (sqrt(rho_i + s) - sqrt(s))`` with
  ``rho_i = sum_j exp(-beta r_ij) fc(r_ij)``: every body order.
"""

import copy
from typing import Dict, List, Optional, Tuple

import ase
import numpy as np
import torch
import vesin
from ase.calculators.calculator import Calculator, all_changes

from .torch_compat import plain_index_select

with plain_index_select():  # any import order with torch_geometric (torch_compat.py)
    from metatensor.torch import Labels, TensorBlock, TensorMap
    from metatomic.torch import ModelOutput, NeighborListOptions, System

from .errors import InputError
from .backends.base import Backend, ClusterBatch
from .backends.packing import intra_cluster_pairs

__all__ = [
    "ReferencePotential",
    "ReferenceBackend",
    "ReferenceCalculator",
    "export_reference_model",
    "TERM_ORDERS",
]

#: body order of each term; the embedding term has every order
TERM_ORDERS = {"one": 1, "pair": 2, "triple": 3, "embedding": None}


class ReferencePotential(torch.nn.Module):
    """Per-atom energies (eV) from pair vectors (A) of a full neighbour list.

    :param numbers: atomic numbers the potential knows, in the order of its parameters
    :param terms: which terms to include, from ``one``, ``pair``, ``triple``,
        ``embedding``
    :param cutoff: radius (A) beyond which every term vanishes smoothly
    :param seed: parameters are drawn from a fixed generator (species-dependent values)
    """

    def __init__(
        self,
        numbers: List[int],
        terms: List[str],
        cutoff: float = 3.0,
        seed: int = 0,
    ):
        super().__init__()
        for term in terms:
            if term not in TERM_ORDERS:
                raise InputError(f"unknown term {term!r}; known: {list(TERM_ORDERS)}")
        self.numbers = list(numbers)
        self.terms = list(terms)
        self.cutoff = float(cutoff)
        n = len(numbers)
        g = torch.Generator().manual_seed(seed)

        def symmetric(low: float, high: float) -> torch.Tensor:
            x = low + (high - low) * torch.rand(n, n, generator=g, dtype=torch.float64)
            return 0.5 * (x + x.T)

        lookup = torch.full((max(numbers) + 1,), -1, dtype=torch.int64)
        lookup[torch.tensor(numbers)] = torch.arange(n)
        self.register_buffer("species_index", lookup)
        self.register_buffer("e0", -1.0 - torch.rand(n, generator=g, dtype=torch.float64))
        self.register_buffer("morse_d", symmetric(0.5, 1.5))
        self.register_buffer("morse_a", symmetric(1.2, 2.0))
        self.register_buffer("morse_r0", symmetric(0.9, 1.4))
        self.register_buffer("triple_lambda", 0.5 + torch.rand(n, generator=g, dtype=torch.float64))
        self.register_buffer("embed_beta", symmetric(0.8, 1.5))
        self.register_buffer("embed_a", 0.5 + torch.rand(n, generator=g, dtype=torch.float64))
        self.use_one = "one" in terms
        self.use_pair = "pair" in terms
        self.use_triple = "triple" in terms
        self.use_embedding = "embedding" in terms

    def _fc(self, r: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(r / self.cutoff, max=1.0)
        return (1.0 - x * x) ** 3

    def forward(
        self, numbers: torch.Tensor, i: torch.Tensor, j: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom energies; ``(i, j, vectors)`` is a full list (both directions)."""
        t = self.species_index[numbers]
        energies = torch.zeros(len(numbers), dtype=vectors.dtype, device=vectors.device)
        if self.use_one:
            energies = energies + self.e0.to(vectors.dtype)[t]
        if len(i) == 0:
            return energies
        r = torch.linalg.norm(vectors, dim=1)
        fc = self._fc(r)
        ti, tj = t[i], t[j]
        if self.use_pair:
            d, a, r0 = self.morse_d[ti, tj], self.morse_a[ti, tj], self.morse_r0[ti, tj]
            morse = d * ((1.0 - torch.exp(-a * (r - r0))) ** 2 - 1.0) * fc
            energies = energies.index_add(0, i, 0.5 * morse.to(vectors.dtype))
        if self.use_embedding:
            rho = torch.zeros_like(energies).index_add(
                0, i, (torch.exp(-self.embed_beta[ti, tj] * r) * fc).to(vectors.dtype)
            )
            s = 0.05
            embed = -self.embed_a[t] * (torch.sqrt(rho + s) - s**0.5)
            energies = energies + embed.to(vectors.dtype)
        if self.use_triple:
            p, q = _pairs_sharing_centre(i, len(numbers))
            cos = (vectors[p] * vectors[q]).sum(dim=1) / (r[p] * r[q])
            term = self.triple_lambda[t[i[p]]] * fc[p] * fc[q] * (cos + 1.0 / 3.0) ** 2
            energies = energies.index_add(0, i[p], term.to(vectors.dtype))
        return energies


def _pairs_sharing_centre(i: torch.Tensor, n_atoms: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """All pairs (p, q), p < q, of entries of a pair list with the same first atom."""
    order = torch.argsort(i, stable=True)
    counts = torch.bincount(i, minlength=n_atoms)
    start = torch.cumsum(counts, 0) - counts
    centre = i[order]
    repeats = counts[centre]
    p = torch.repeat_interleave(torch.arange(len(order), device=i.device), repeats)
    offset = torch.arange(len(p), device=i.device) - torch.repeat_interleave(
        torch.cumsum(repeats, 0) - repeats, repeats
    )
    q = start[centre][p] + offset
    keep = q > p
    return order[p[keep]], order[q[keep]]


def _full_neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    periodic = bool(np.any(pbc))
    nl = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, shifts = nl.compute(
        points=positions,
        box=cell if periodic else np.zeros((3, 3)),
        periodic=np.asarray(pbc) if periodic else False,
        quantities="ijS",
    )
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.float64)


def evaluate_periodic(
    potential: ReferencePotential, atoms: ase.Atoms, forces: bool, stress: bool
) -> dict:
    """The potential on a whole (possibly periodic) system, forces and stress by
    autograd through a strain."""
    positions = torch.tensor(atoms.positions, dtype=torch.float64)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=torch.float64)
    i, j, shifts = _full_neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, potential.cutoff)
    strain = torch.eye(3, dtype=torch.float64, requires_grad=stress)
    positions.requires_grad_(forces)
    strained_positions = positions @ strain
    strained_cell = cell @ strain
    i_t, j_t = torch.from_numpy(i), torch.from_numpy(j)
    vectors = strained_positions[j_t] - strained_positions[i_t] + torch.from_numpy(shifts) @ strained_cell
    numbers = torch.from_numpy(atoms.numbers.astype(np.int64))
    per_atom = potential(numbers, i_t, j_t, vectors)
    energy = per_atom.sum()
    results = {"energy": float(energy.detach()), "energies": per_atom.detach().numpy()}
    wrt = [t for t, want in ((positions, forces), (strain, stress)) if want]
    if wrt:
        if energy.requires_grad:
            grads = torch.autograd.grad(energy, wrt, allow_unused=True, materialize_grads=True)
        else:  # a lone atom: nothing depends on the positions
            grads = [torch.zeros_like(t) for t in wrt]
        if forces:
            results["forces"] = -grads[0].numpy()
        if stress:
            results["stress"] = grads[-1].numpy() / atoms.get_volume()
    return results


class ReferenceBackend(Backend):
    """Packed evaluation of a :class:`ReferencePotential` (no model files involved)."""

    packed = True

    def __init__(self, potential: ReferencePotential):
        self.potential = potential
        self.default_cutoff = potential.cutoff
        self.dtype = "float64"
        self.atomic_types = sorted(int(z) for z in potential.numbers)
        self.display_name = "the reference potential"

    def evaluate(self, batch: ClusterBatch, forces: bool):
        positions = torch.from_numpy(batch.positions).requires_grad_(forces)
        i, j = intra_cluster_pairs(positions, batch.ptr, self.potential.cutoff, full_list=True)
        per_atom = self.potential(
            torch.from_numpy(batch.numbers.astype(np.int64)), i, j, positions[j] - positions[i]
        )
        cluster = torch.from_numpy(batch.cluster_of_atom())
        energies = torch.zeros(batch.n_clusters, dtype=torch.float64).index_add(
            0, cluster, per_atom.detach()
        )
        f = None
        if forces:
            total = per_atom.sum()
            if total.requires_grad:
                (grad,) = torch.autograd.grad(total, positions, allow_unused=True, materialize_grads=True)
                f = -grad.numpy()
            else:
                f = np.zeros_like(batch.positions)
        return energies.numpy(), f

    def evaluate_full(self, atoms: ase.Atoms, forces: bool, stress: bool) -> dict:
        return evaluate_periodic(self.potential, atoms, forces, stress)

    def describe(self) -> dict:
        return {
            "backend": "ReferenceBackend",
            "dtype": self.dtype,
            "model": f"ReferencePotential(terms={self.potential.terms})",
        }


class ReferenceCalculator(Calculator):
    """ASE calculator for a :class:`ReferencePotential` (periodic cells included)."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential: ReferencePotential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        stress = "stress" in properties and bool(self.atoms.pbc.all())
        results = evaluate_periodic(self.potential, self.atoms, True, stress)
        results["free_energy"] = results["energy"]
        if stress:
            from ase.stress import full_3x3_to_voigt_6_stress

            results["stress"] = full_3x3_to_voigt_6_stress(results["stress"])
        self.results.update(results)


class _ReferenceMetatomicModule(torch.nn.Module):
    """metatomic ``ModelInterface`` around a :class:`ReferencePotential`."""

    def __init__(self, potential: ReferencePotential, full_list: bool, dtype: torch.dtype):
        super().__init__()
        # Module.to() converts in place: work on a copy, leave the caller's untouched
        self.potential = copy.deepcopy(potential).to(dtype)
        self.options = NeighborListOptions(cutoff=potential.cutoff, full_list=full_list, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.options]

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        if "energy" not in outputs:
            return {}
        per_atom: List[torch.Tensor] = []
        system_index: List[torch.Tensor] = []
        atom_index: List[torch.Tensor] = []
        for s, system in enumerate(systems):
            nl = system.get_neighbor_list(self.options)
            i = nl.samples.column("first_atom")
            j = nl.samples.column("second_atom")
            vectors = nl.values.reshape(-1, 3)
            if not self.options.full_list:
                i, j = torch.cat([i, j]), torch.cat([j, i])
                vectors = torch.cat([vectors, -vectors])
            energies = self.potential(system.types.to(torch.int64), i, j, vectors)
            per_atom.append(energies)
            n = len(system)
            system_index.append(torch.full((n,), s, dtype=torch.int32, device=energies.device))
            atom_index.append(torch.arange(n, dtype=torch.int32, device=energies.device))
        values = torch.cat(per_atom)
        if outputs["energy"].sample_kind == "atom":
            samples = Labels(
                ["system", "atom"], torch.stack([torch.cat(system_index), torch.cat(atom_index)], dim=1)
            )
            block_values = values.reshape(-1, 1)
        else:
            totals = torch.stack([e.sum() for e in per_atom])
            samples = Labels(
                ["system"], torch.arange(len(systems), dtype=torch.int32, device=values.device).reshape(-1, 1)
            )
            block_values = totals.reshape(-1, 1)
        block = TensorBlock(
            values=block_values,
            samples=samples,
            components=[],
            properties=Labels(["energy"], torch.tensor([[0]], device=values.device)),
        )
        return {"energy": TensorMap(Labels("_", torch.tensor([[0]], device=values.device)), [block])}


def export_reference_model(
    potential: ReferencePotential,
    path: str | None = None,
    *,
    full_list: bool = True,
    dtype: str = "float64",
    per_atom: bool = True,
):
    """Wrap a reference potential as a metatomic ``AtomisticModel`` (TorchScript).

    Saved to ``path`` (a ``.pt`` file) when given; the model is returned either way.
    ``per_atom=False`` declares no per-atom energies (to exercise the fallback path).
    """
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput

    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    module = _ReferenceMetatomicModule(potential, full_list, torch_dtype).eval()
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="atom" if per_atom else "system")},
        atomic_types=list(potential.numbers),
        interaction_range=potential.cutoff,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype=dtype,
    )
    metadata = ModelMetadata(
        name=f"reference potential ({'+'.join(potential.terms)})",
        description="explicit body-order potential from ase_bodyorder.reference",
    )
    model = AtomisticModel(module, metadata, capabilities)
    if path is not None:
        model.save(str(path))
    return model

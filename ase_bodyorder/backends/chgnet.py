"""CHGNet (a universal MLIP with a bond graph of angles) as a packed backend.

Every subcluster of a chunk goes into ONE CHGNet crystal graph: the atom graph joins
atoms of the same subcluster closer than 6 A, and CHGNet's own graph code
(``CrystalGraphConverter.create_graph``, the C ``make_graph`` of its wheel, then its
line graph of bonds shorter than 3 A) builds the directed edges, undirected bonds and
angles from that pair list. No edge crosses two subclusters, so no message does, and
the per-atom energies of CHGNet's forward (``return_site_energies``, its per-element
reference energies included) are summed per subcluster in float64 (docs/design.md,
Packing). The graph has no periodic image at all (every image index is 0 and the
lattice the unit matrix, so the "fractional" coordinates are the Cartesian positions):
an isolated subcluster sees nothing but itself, as CHGNet's own calculator sees a
cluster in a box larger than its cutoffs. Forces are CHGNet's own autograd (its ``ef``
task), per atom within its own subcluster.

One graph per chunk rather than CHGNet's list of graphs (``predict_graph``): CHGNet
featurises a list graph by graph in Python, which costs about 1 ms per subcluster,
far more than the model itself on a triplet (benchmarks/bench_chgnet.py measures
both).

The pretrained checkpoints inside the ``chgnet`` wheel are reached by name
(:data:`PRETRAINED`: ``"chgnet"`` is 0.3.0); nothing is downloaded. A loaded
``chgnet.model.CHGNet`` works too (a checkpoint of your own:
``CHGNet.from_file(path)``). CHGNet predicts the energy per atom; the energies here
are totals (eV). CHGNet computes in float32; ``dtype="float64"`` (the default, for the
body-order differences) runs the same weights in float64. Install with
``pip install "ase-bodyorder[chgnet]"``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from pathlib import Path

import ase
import numpy as np

from ..errors import InputError, MissingDependencyError
from .base import Backend, ClusterBatch, file_sha256, torch_device

__all__ = ["PRETRAINED", "ChgnetBackend", "installed_pretrained", "is_chgnet_model"]

#: pretrained names: (chgnet's own model_name, checkpoint inside the wheel)
PRETRAINED = {
    "chgnet-0.3.0": ("0.3.0", "0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar"),
    "chgnet-0.2.0": ("0.2.0", "0.2.0/chgnet_0.2.0_e30f77s348m32.pth.tar"),
    "chgnet-r2scan": ("r2scan", "r2scan/chgnet_r2scan_transfer_learning_e15f36s161m23.pth.tar"),
}
_ALIASES = {"chgnet": "chgnet-0.3.0"}


def _canonical(text: str) -> str:
    return str(text).lower().replace("_", "-")


def is_chgnet_model(model) -> bool:
    """Whether ``model`` is a CHGNet name (:data:`PRETRAINED`, ``"chgnet"``) or a
    loaded ``chgnet.model.CHGNet`` (recognised without importing chgnet)."""
    if isinstance(model, (str, os.PathLike)):
        name = _canonical(model)
        return name in PRETRAINED or name in _ALIASES
    return any(cls.__module__.startswith("chgnet.") and cls.__name__ == "CHGNet" for cls in type(model).__mro__)


def installed_pretrained() -> dict[str, Path] | None:
    """The pretrained checkpoints in the installed chgnet wheel, by name, found without
    importing it; None when chgnet is not installed."""
    from importlib.util import find_spec

    spec = find_spec("chgnet")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "pretrained"
    return {name: root / relative for name, (_, relative) in PRETRAINED.items() if (root / relative).is_file()}


def _load(model):
    """The CHGNet model (a private copy) and its display name."""
    try:
        import chgnet  # noqa: F401 (first: a submodule imported before would hide its absence)
        from chgnet.model.model import CHGNet
    except ImportError:
        raise MissingDependencyError(
            "CHGNet models need the 'chgnet' package: pip install \"ase-bodyorder[chgnet]\" "
            "(or pip install -e \".[chgnet]\" in a checkout)"
        ) from None
    if not isinstance(model, (str, os.PathLike)):
        return copy.deepcopy(model), f"CHGNet {model.version or '(own weights)'}"
    name = _canonical(model)
    name = _ALIASES.get(name, name)
    if name not in PRETRAINED:
        raise InputError(f"no CHGNet model named '{model}': known are {', '.join(sorted([*PRETRAINED, *_ALIASES]))}")
    found = installed_pretrained() or {}
    if name not in found:
        raise FileNotFoundError(
            f"the checkpoint of {name} is not in the installed chgnet package; nothing is downloaded"
        )
    # CHGNet prints a line when it is built: keep stdout for the results
    with contextlib.redirect_stdout(io.StringIO()):
        return CHGNet.load(model_name=PRETRAINED[name][0], use_device="cpu", verbose=False), name


class ChgnetBackend(Backend):
    """Evaluate subclusters with a CHGNet model, packed into one graph per chunk.

    :param model: a pretrained name (``"chgnet"`` = ``"chgnet-0.3.0"``,
        ``"chgnet-0.2.0"``, ``"chgnet-r2scan"``) or a loaded ``chgnet.model.CHGNet``
        (copied, never changed)
    :param dtype: ``"float64"`` (default: the expansion's differences amplify round-off)
        or ``"float32"`` (CHGNet's own precision, faster)
    :param device: torch device (default ``"cpu"``)
    """

    packed = True
    # measured on Si64, K = 3 with forces: see docs/universal.md
    preferred_chunk_atoms = 4096
    atomic_types = list(range(1, 95))  # CHGNet's embedding: H to Pu

    def __init__(self, model="chgnet-0.3.0", *, dtype: str = "float64", device: str | None = None):
        import torch


        if dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.model, self.name = _load(model)
        if not self.model.mlp_first:
            raise InputError(
                f"{self.name} reads out per structure (mlp_first=False): it has no per-atom energies to pack"
            )
        self.display_name = self.name
        self.dtype = dtype
        self.device = torch_device(device)
        self._torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        self.model = self.model.to(self.device, self._torch_dtype).eval()
        # its composition model counts elements in float32 whatever the weights' dtype
        for layer in self.model.composition_model.modules() if self.model.composition_model else ():
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_pre_hook(lambda mod, args: tuple(a.to(mod.weight.dtype) for a in args))
        self.converter = self.model.graph_converter
        self.converter.set_isolated_atom_response("ignore")  # a lone atom is a valid cluster here
        self.default_cutoff = float(self.converter.atom_graph_cutoff)
        self.bond_cutoff = float(self.converter.bond_graph_cutoff)
        self.path = (installed_pretrained() or {}).get(self.name)
        self._hash: str | None = None

    def _graph(self, batch: ClusterBatch):
        """One CrystalGraph of every cluster of the batch, edges within each cluster."""
        import torch
        from chgnet.graph import CrystalGraph

        from .packing import intra_cluster_pairs

        i, j = intra_cluster_pairs(torch.from_numpy(batch.positions), batch.ptr, self.default_cutoff, full_list=True)
        i, j = i.numpy(), j.numpy()
        distance = np.linalg.norm(batch.positions[j] - batch.positions[i], axis=1)
        # CHGNet's own graph code on this pair list: directed and undirected edges, and
        # the angles between bonds shorter than its bond-graph cutoff
        graph = self.converter.create_graph(batch.n_atoms, i, j, np.zeros((len(i), 3), dtype=np.int64), distance)
        atom_graph, directed2undirected = graph.adjacency_list()
        bond_graph, undirected2directed = graph.line_graph_adjacency_list(cutoff=self.bond_cutoff)
        floats = {"dtype": self._torch_dtype, "device": self.device}
        ints = {"dtype": torch.int32, "device": self.device}
        return CrystalGraph(
            atomic_number=torch.tensor(batch.numbers, **ints),
            # the unit lattice: these "fractional" coordinates are the positions (A)
            atom_frac_coord=torch.tensor(batch.positions, **floats).requires_grad_(True),
            atom_graph=torch.tensor(atom_graph, **ints).reshape(-1, 2),
            atom_graph_cutoff=self.default_cutoff,
            neighbor_image=torch.zeros((len(atom_graph), 3), **floats),
            directed2undirected=torch.tensor(directed2undirected, **ints),
            undirected2directed=torch.tensor(undirected2directed, **ints),
            bond_graph=torch.tensor(bond_graph, **ints).reshape(-1, 5),
            bond_graph_cutoff=self.bond_cutoff,
            lattice=torch.eye(3, **floats),
        )

    def evaluate(self, batch: ClusterBatch, forces: bool):
        import torch

        if batch.n_atoms == 0:
            return np.zeros(batch.n_clusters), (np.zeros((0, 3)) if forces else None)
        graph = self._graph(batch)
        if forces:
            with torch.enable_grad():  # CHGNet takes the gradient itself (its "ef" task)
                output = self.model([graph], task="ef", return_site_energies=True)
        else:
            with torch.no_grad():
                output = self.model([graph], task="e", return_site_energies=True)
        site = output["site_energies"][0].detach().to(torch.float64).cpu().numpy()
        energies = np.zeros(batch.n_clusters)  # summed in float64 whatever the model's dtype
        np.add.at(energies, batch.cluster_of_atom(), site)
        f = output["f"][0].detach().to(torch.float64).cpu().numpy() if forces else None
        return energies, f

    def structure(self, atoms: ase.Atoms):
        """The pymatgen Structure CHGNet sees for ``atoms``: its cell if periodic in all
        three directions; a finite structure in a box with at least twice the atom-graph
        cutoff of vacuum between images (no image is within CHGNet's cutoffs)."""
        from pymatgen.core import Lattice, Structure

        if atoms.pbc.all():
            return Structure(Lattice(atoms.cell.array), atoms.numbers, atoms.positions, coords_are_cartesian=True)
        if atoms.pbc.any():
            raise InputError(
                "CHGNet treats every cell as periodic in three directions: give a structure periodic "
                "in all three, or none (a finite one, boxed here)"
            )
        margin = 2.0 * self.default_cutoff
        positions = atoms.positions - atoms.positions.min(axis=0) + margin
        box = np.diag(np.ptp(atoms.positions, axis=0) + 2.0 * margin)
        return Structure(Lattice(box), atoms.numbers, positions, coords_are_cartesian=True)

    def evaluate_full(self, atoms: ase.Atoms, forces: bool, stress: bool) -> dict:
        """The plain model on the whole system, its graph made by CHGNet's converter
        (periodic images included), in this backend's dtype."""
        import torch
        from ase.units import GPa

        structure = self.structure(atoms)
        graph = self.converter(structure).to(str(self.device))
        if self._torch_dtype == torch.float64:  # coordinates from the structure in float64
            graph.atom_frac_coord = torch.tensor(structure.frac_coords, dtype=torch.float64,
                                                 device=self.device, requires_grad=True)
            graph.lattice = torch.tensor(structure.lattice.matrix, dtype=torch.float64, device=self.device)
            graph.neighbor_image = graph.neighbor_image.to(torch.float64)
        # stress comes from CHGNet's strain: the lattice needs no gradient (and with one,
        # CHGNet warns when it reads the volume)
        graph.lattice = graph.lattice.detach()
        task = "e" + ("f" if forces or stress else "") + ("s" if stress else "")
        with torch.enable_grad():
            output = self.model([graph], task=task, return_site_energies=True)
        site = output["site_energies"][0].detach().to(torch.float64).cpu().numpy()
        out = {"energy": float(site.sum()), "energies": site}
        if forces:
            out["forces"] = output["f"][0].detach().to(torch.float64).cpu().numpy()
        if stress:
            # GPa to eV/A^3; CHGNet divides by a float32 volume: use the exact one
            volume = abs(float(np.linalg.det(structure.lattice.matrix)))
            s = output["s"][0].detach().to(torch.float64).cpu().numpy()
            out["stress"] = s * GPa * float(np.float32(volume)) / volume
        return out

    def describe(self) -> dict:
        from importlib.metadata import version

        if self._hash is None and self.path is not None:
            self._hash = file_sha256(self.path)
        return {
            "backend": "ChgnetBackend",
            "model": self.name,
            "model_name": self.name,
            "model_file": str(self.path or ""),
            "model_sha256": self._hash or "",
            "chgnet_version": version("chgnet"),
            "dtype": self.dtype,
            "device": str(self.device),
            "packed": True,
        }

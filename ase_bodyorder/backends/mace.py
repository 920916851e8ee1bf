"""Native MACE models (mace-torch ``.model`` files) as a packed backend.

Every subcluster of a chunk goes into ONE graph, each subcluster a graph of mace's
batch, with edges only between atoms of the same subcluster closer than the model's
``r_max`` (docs/design.md, Packing): no message passes between subclusters whatever
their positions. The node energies are summed per subcluster in float64, and one
backward pass of the total gives every atom its force within its own subcluster.

A ``.model`` file is what mace-torch's training writes (``torch.save`` of the whole
module): foundation models (MACE-MP, MACE-OFF, ...) are such files, passed by path;
nothing is downloaded. Loading one unpickles it, which runs code: load only files you
trust, as with mace-torch's own calculator. Install with ``pip install
"ase-bodyorder[mace]"``; mace-torch pins e3nn 0.4.4 and sevenn needs e3nn >= 0.5, so the
two live in separate environments (docs/mace.md).

float64 by default (``.double()`` of the loaded model, as mace-torch's calculator does
with ``default_dtype="float64"``): the expansion's differences amplify round-off.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import ase
import numpy as np

from ..errors import InputError, MissingDependencyError
from .base import Backend, ClusterBatch, file_sha256, torch_device

__all__ = ["MaceBackend", "is_mace_model"]

#: energy models of mace-torch this backend evaluates (ScaleShiftMACE is a MACE)
_ENERGY_MODELS = ("MACE", "ScaleShiftMACE")


def is_mace_model(model) -> bool:
    """Whether ``model`` names a native MACE model: a ``.model`` path, or a loaded
    mace-torch module (told apart without importing torch or mace)."""
    if isinstance(model, (str, os.PathLike)):
        return str(model).endswith(".model")
    return type(model).__module__.startswith("mace.")


def _import_mace():
    import contextlib
    import io

    try:
        # mace prints a note on stdout when cuequivariance is missing, which would corrupt
        # the command line's CSV and JSON, and e3nn 0.4.4 warns that it loads its
        # constants without weights_only (mace's import allows that under torch >= 2.6)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
            import mace  # noqa: F401
            import mace.modules  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "native MACE models (.model files) need mace-torch: pip install \"ase-bodyorder[mace]\" "
            "(or pip install -e \".[mace]\" in a checkout; mace-torch pins e3nn 0.4.4 and sevenn needs "
            "e3nn >= 0.5, so it needs an environment of its own: docs/mace.md)"
        ) from None


def _load(path: Path):
    """The MACE module in ``path``, refused in one line if the file holds anything else."""
    import torch

    if not path.exists():
        raise FileNotFoundError(f"MACE model file '{path}' does not exist")
    try:
        # weights_only=False: a .model file is a pickled module (as mace-torch loads it);
        # a TorchScript file is refused below, so torch's note about it is noise
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a text file, a truncated archive, a TorchScript file ...
        import zipfile

        if zipfile.is_zipfile(path) and any(n.split("/")[1:2] == ["code"] for n in zipfile.ZipFile(path).namelist()):
            # a TorchScript archive whose classes are not loaded (a metatomic model renamed)
            raise InputError(f"'{path}' is a TorchScript (compiled) model, not a native MACE .model file: a "
                             "metatomic model keeps its .pt name; for MACE give the mace-torch .model") from None
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        raise InputError(f"'{path}' is not a MACE model file: torch.load failed ({type(error).__name__}: "
                         f"{reason})") from None
    if isinstance(loaded, torch.jit.ScriptModule):
        raise InputError(f"'{path}' is a TorchScript (compiled) model, not a native MACE .model file: give the "
                         "mace-torch .model it was made from (a metatomic .pt goes by its own name)")
    _check_energy_model(loaded, f"'{path}'")
    return loaded


def _check_energy_model(model, name: str) -> None:
    from mace.modules.models import MACE

    if not isinstance(model, MACE) or type(model).__name__ not in _ENERGY_MODELS:
        raise InputError(f"{name} is not a MACE energy model: it holds a {type(model).__name__} "
                         f"(expected one of mace-torch's {', '.join(_ENERGY_MODELS)})")


class MaceBackend(Backend):
    """Evaluate subclusters with a native mace-torch model, packed into one graph per chunk.

    :param model: a mace-torch ``.model`` file (what its training writes; foundation
        models too), or a loaded mace-torch ``MACE``/``ScaleShiftMACE`` module (used as
        given: converted to ``dtype`` and its parameters frozen, in place)
    :param dtype: ``"float64"`` (default: the expansion's differences amplify round-off)
        or ``"float32"``; the model is converted if it was saved in the other
    :param device: torch device (default ``"cpu"``)
    :param head: the head of a multi-head model (default: its only head, or the one
        named ``default``)
    """

    packed = True
    # MACE's symmetric contractions make large per-atom intermediates: smaller chunks stay
    # in cache (measured, H64 K = 3, mace-h-fci, one thread: 256-1024 atoms per call 5.3-6 s,
    # 2048 7.9-13 s, 4096 9-15 s), and foundation-size models need the memory bound anyway
    preferred_chunk_atoms = 512

    def __init__(self, model, *, dtype: str = "float64", device: str | None = None, head: str | None = None):
        _import_mace()
        import torch

        if dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.device = torch_device(device)
        if isinstance(model, (str, os.PathLike)):
            self.path: Path | None = Path(model)
            self.name = str(model)
            loaded = _load(self.path)
        else:
            self.path, self.name, loaded = None, type(model).__name__, model
            _check_energy_model(model, "this object")
        if getattr(loaded, "embedding_specs", None):
            raise InputError(f"{self.name} takes per-structure inputs ({', '.join(loaded.embedding_specs)}), "
                             "which isolated subclusters do not have")
        self.dtype = dtype
        self._torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        self.model = (loaded.double() if dtype == "float64" else loaded.float()).to(self.device).eval()
        for parameter in self.model.parameters():  # forces come from positions, not weights
            parameter.requires_grad_(False)
        self.display_name = self.name
        self.default_cutoff = float(self.model.r_max)
        self.atomic_types = [int(z) for z in self.model.atomic_numbers]
        self.heads = list(getattr(self.model, "heads", None) or ["Default"])
        self.head = _choose_head(self.heads, head, self.name)
        # atomic number -> column of the one-hot node attributes (the model's order)
        self._index = np.full(max(self.atomic_types) + 1, -1, dtype=np.int64)
        self._index[self.atomic_types] = np.arange(len(self.atomic_types))
        self._hash: str | None = None

    def _inputs(self, positions, numbers: np.ndarray, ptr: np.ndarray, edges, shifts, cell) -> dict:
        """The dict mace's forward takes: one graph per entry of ``ptr``."""
        import torch

        n_graphs = len(ptr) - 1
        index = torch.from_numpy(self._index[numbers]).to(self.device)
        sizes = torch.from_numpy(np.diff(ptr)).to(self.device)
        return {
            "positions": positions,
            "node_attrs": torch.nn.functional.one_hot(index, len(self.atomic_types)).to(self._torch_dtype),
            "edge_index": edges,
            "shifts": shifts[1],
            "unit_shifts": shifts[0],
            "cell": cell,
            "batch": torch.repeat_interleave(torch.arange(n_graphs, device=self.device), sizes),
            "ptr": torch.from_numpy(np.asarray(ptr, dtype=np.int64)).to(self.device),
            "head": torch.full((n_graphs,), self.heads.index(self.head), dtype=torch.int64, device=self.device),
        }

    def evaluate(self, batch: ClusterBatch, forces: bool):
        import torch

        from .packing import intra_cluster_pairs

        if batch.n_atoms == 0:
            return np.zeros(batch.n_clusters), (np.zeros((0, 3)) if forces else None)
        positions = torch.from_numpy(batch.positions).to(self.device, self._torch_dtype)
        # edges within each subcluster only; full list, as mace's own neighbour list
        sender, receiver = intra_cluster_pairs(positions, batch.ptr, self.default_cutoff, full_list=True)
        zeros = torch.zeros((len(sender), 3), dtype=self._torch_dtype, device=self.device)
        cell = torch.zeros((3 * batch.n_clusters, 3), dtype=self._torch_dtype, device=self.device)
        data = self._inputs(positions, batch.numbers, batch.ptr, torch.stack([sender, receiver]), (zeros, zeros), cell)
        with torch.enable_grad() if forces else torch.no_grad():
            output = self.model(data, training=False, compute_force=forces)
        node = output["node_energy"].detach().to(torch.float64).cpu().numpy()
        energies = np.zeros(batch.n_clusters)  # summed in float64 whatever the model's dtype
        np.add.at(energies, batch.cluster_of_atom(), node)
        f = output["forces"].detach().to(torch.float64).cpu().numpy() if forces else None
        return energies, f

    def evaluate_full(self, atoms: ase.Atoms, forces: bool, stress: bool) -> dict:
        """The plain model on the whole system (periodic or not), in this backend's
        dtype: the graph mace builds, every image within ``r_max`` (ASE's neighbour list)."""
        import torch
        from ase.neighborlist import neighbor_list

        sender, receiver, unit_shifts = neighbor_list("ijS", atoms, self.default_cutoff)
        cell = torch.tensor(np.asarray(atoms.cell[:]), dtype=self._torch_dtype, device=self.device)
        unit = torch.from_numpy(unit_shifts.astype(np.float64)).to(self.device, self._torch_dtype)
        positions = torch.tensor(atoms.positions, dtype=self._torch_dtype, device=self.device)  # a copy
        edges = torch.from_numpy(np.stack([sender, receiver]).astype(np.int64)).to(self.device)
        data = self._inputs(positions, atoms.numbers, np.array([0, len(atoms)]), edges, (unit, unit @ cell), cell)
        with torch.enable_grad():
            output = self.model(data, training=False, compute_force=forces, compute_stress=stress)
        out = {
            "energy": float(output["node_energy"].detach().to(torch.float64).sum()),
            "energies": output["node_energy"].detach().to(torch.float64).cpu().numpy(),
        }
        if forces:
            out["forces"] = output["forces"].detach().to(torch.float64).cpu().numpy()
        if stress:
            out["stress"] = output["stress"].detach().to(torch.float64).cpu().numpy().reshape(3, 3)
        return out

    def describe(self) -> dict:
        from importlib.metadata import version

        if self._hash is None and self.path is not None:  # once: logs name the exact weights
            self._hash = file_sha256(self.path)
        return {
            "backend": "MaceBackend",
            "model": self.name,
            "model_name": self.name,
            "model_file": str(self.path or ""),
            "model_sha256": self._hash or "",
            "model_class": type(self.model).__name__,
            "head": self.head,
            "mace_version": version("mace-torch"),
            "dtype": self.dtype,
            "device": str(self.device),
            "packed": True,
        }


def _choose_head(heads: list[str], head: str | None, name: str) -> str:
    """The head asked for, the only one, or the one named ``default`` (as mace-torch's
    calculator chooses), refused in one line otherwise."""
    if head is not None:
        if head not in heads:
            raise InputError(f"head {head!r} is not one of {name}'s: {heads}")
        return head
    if len(heads) == 1:
        return heads[0]
    default = [h for h in heads if h.lower() == "default"]
    if not default:
        raise InputError(f"{name} has several heads ({heads}) and none named 'default': choose one")
    return default[0]


"""SevenNet models (NequIP-style universal MLIPs) as a packed backend.

Every subcluster of a batch goes into ONE graph whose edges join atoms of the same
subcluster only (closer than the model's cutoff), so no message passes between
subclusters whatever their positions, and the per-atom energies are summed per
subcluster in float64 (docs/design.md, Packing). The model's own force output is the
gradient of the sum of all energies, which gives every atom its force within its own
subcluster.

The pretrained checkpoints inside the ``sevenn`` wheel are reached by name
(``"sevennet-0"`` and the others in :data:`PRETRAINED`); a SevenNet checkpoint file
(``.pth``) by path. Nothing is ever downloaded: a name whose checkpoint is not in the
installed wheel is refused. Install with ``pip install "ase-bodyorder[sevennet]"``.

SevenNet computes in float32. ``dtype="float64"`` rebuilds the same model in float64
(same weights, cast), which the body-order differences need for analysis; float32 is
faster and fine for MD (docs/universal.md measures the difference).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import ase
import numpy as np

from ..errors import InputError, MissingDependencyError  # noqa: F401 (re-exported)
from .base import Backend, ClusterBatch, file_sha256, torch_device

__all__ = ["MissingDependencyError", "PRETRAINED", "SevenNetBackend", "installed_pretrained", "is_sevennet_model"]


#: names of the pretrained models (checkpoint file inside the sevenn wheel, modal)
PRETRAINED = {
    "sevennet-0": ("SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth", None),
    "sevennet-0-22may2024": ("SevenNet_0__22May2024/checkpoint_sevennet_0.pth", None),
    "sevennet-l3i5": ("SevenNet_l3i5/checkpoint_l3i5.pth", None),
    "sevennet-mf-0": ("SevenNet_MF_0/checkpoint_sevennet_mf_0.pth", "PBE"),
}
_ALIASES = {"7net-0": "sevennet-0", "sevennet-0-11jul2024": "sevennet-0"}


def is_sevennet_model(model) -> bool:
    """Whether ``model`` names a SevenNet model: a pretrained name or a ``.pth`` file."""
    if not isinstance(model, (str, os.PathLike)):
        return False
    text = str(model).lower().replace("_", "-")
    return text in PRETRAINED or text in _ALIASES or str(model).endswith(".pth")


def installed_pretrained() -> dict[str, Path] | None:
    """The pretrained checkpoints in the installed sevenn wheel, by name, found without
    importing it (nor torch); None when sevenn is not installed."""
    from importlib.util import find_spec

    spec = find_spec("sevenn")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "pretrained_potentials"
    return {name: root / relative for name, (relative, _) in PRETRAINED.items() if (root / relative).is_file()}


def _import_sevenn():
    # torch_geometric (which sevenn imports) breaks the TorchScript compilation that
    # metatensor-torch does at import: metatensor-torch is imported with torch's own
    # index_select (even when sevenn came first), so that SevenNet and metatomic models
    # share one process in any order
    from ..torch_compat import plain_index_select

    with plain_index_select():
        import metatensor.torch  # noqa: F401
        import metatomic.torch  # noqa: F401

    try:
        import sevenn  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "SevenNet models need the 'sevenn' package: pip install \"ase-bodyorder[sevennet]\" "
            "(or pip install -e \".[sevennet]\" in a checkout; it needs e3nn >= 0.5, so it cannot "
            "share an environment with metatrain[mace])"
        ) from None


def _checkpoint_path(model) -> tuple[Path, str | None, str]:
    """Checkpoint file, default modal and a display name for ``model``."""
    text = str(model).lower().replace("_", "-")
    name = _ALIASES.get(text, text)
    if name in PRETRAINED:
        import sevenn

        relative, modal = PRETRAINED[name]
        path = Path(sevenn.__file__).parent / "pretrained_potentials" / relative
        if not path.exists():
            raise FileNotFoundError(
                f"the checkpoint of {name} is not in the installed sevenn package ({path}); "
                "nothing is downloaded at run time"
            )
        return path, modal, name
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"SevenNet checkpoint '{path}' does not exist")
    return path, None, str(path)


class SevenNetBackend(Backend):
    """Evaluate subclusters with a SevenNet model, packed into one graph per chunk.

    :param model: a pretrained name (:data:`PRETRAINED`, e.g. ``"sevennet-0"``) or a
        SevenNet checkpoint file
    :param dtype: ``"float64"`` (default: the expansion's differences amplify
        round-off) or ``"float32"`` (SevenNet's own precision, faster)
    :param device: torch device (default ``"cpu"``)
    :param modal: fidelity of a multi-fidelity model (default: the model's PBE one)
    """

    packed = True
    # measured on Si64, K = 3: 16384 atoms per call peaked at 11 GB in float64
    preferred_chunk_atoms = 2048

    def __init__(self, model="sevennet-0", *, dtype: str = "float64", device: str | None = None, modal=None):
        _import_sevenn()
        import torch
        import sevenn._keys as KEY
        import sevenn.util

        if dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        path, default_modal, self.name = _checkpoint_path(model)
        self.display_name = self.name
        self.path = path
        self.dtype = dtype
        self.device = torch_device(device)
        self._torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no tensor-product accelerator": fine on CPU
            checkpoint = sevenn.util.load_checkpoint(str(path))
            self.model = checkpoint.build_model()
            if dtype == "float64":
                self.model = _rebuilt_in_float64(checkpoint, self.model)
        self.model.set_is_batch_data(False)
        self.model.eval()
        self.model.to(self.device)
        self._energy_model = _without_forces(self.model)
        config = checkpoint.config
        self.default_cutoff = float(config[KEY.CUTOFF])
        self.type_map = dict(config[KEY.TYPE_MAP])
        self.atomic_types = sorted(int(z) for z in self.type_map)
        modal_map = getattr(self.model, "modal_map", None) or {}
        self.modal = None
        if modal_map:
            chosen = modal or default_modal
            if chosen not in modal_map:
                raise InputError(f"modal {chosen!r} is not one of this model's: {sorted(modal_map)}")
            self.modal = chosen
        elif modal is not None:
            raise InputError(f"{self.name} has a single fidelity: modal must not be given")
        self._keys = KEY
        self._hash: str | None = None

    def _graph(self, batch: ClusterBatch):
        """One graph of every cluster of the batch, edges within each cluster only."""
        import torch
        from sevenn.atom_graph_data import AtomGraphData

        from .packing import intra_cluster_pairs

        KEY = self._keys
        positions = torch.from_numpy(batch.positions).to(self.device, self._torch_dtype)
        source, target = intra_cluster_pairs(positions, batch.ptr, self.default_cutoff, full_list=True)
        numbers = torch.from_numpy(batch.numbers.astype(np.int64)).to(self.device)
        data = AtomGraphData(x=numbers, edge_index=torch.stack([source, target]), pos=positions)
        data[KEY.ATOMIC_NUMBERS] = numbers
        data[KEY.EDGE_VEC] = positions[target] - positions[source]
        data[KEY.CELL_VOLUME] = torch.tensor(0.0, dtype=self._torch_dtype, device=self.device)
        data[KEY.NUM_ATOMS] = torch.tensor(batch.n_atoms, device=self.device)
        if self.modal is not None:
            data[KEY.DATA_MODALITY] = self.modal
        return data

    def evaluate(self, batch: ClusterBatch, forces: bool):
        import torch

        KEY = self._keys
        if batch.n_atoms == 0:
            return np.zeros(batch.n_clusters), (np.zeros((0, 3)) if forces else None)
        if forces:
            # the model takes the gradient itself (its force output): grad mode is needed
            with torch.enable_grad():
                output = self.model(self._graph(batch))
        else:  # energies alone: no force output, no graph kept for a backward pass
            with torch.no_grad():
                output = self._energy_model(self._graph(batch))
        atomic = output[KEY.ATOMIC_ENERGY].detach().reshape(-1).to(torch.float64).cpu().numpy()
        energies = np.zeros(batch.n_clusters)  # summed in float64 whatever the model's dtype
        np.add.at(energies, batch.cluster_of_atom(), atomic)
        f = output[KEY.PRED_FORCE].detach().to(torch.float64).cpu().numpy() if forces else None
        return energies, f

    def evaluate_full(self, atoms: ase.Atoms, forces: bool, stress: bool) -> dict:
        """The plain model on the whole system (periodic or not), in this backend's
        dtype: SevenNet's own graph of the structure, as its ASE calculator builds it."""
        import torch
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        KEY = self._keys
        data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, self.default_cutoff))
        for key, value in list(data.items()):  # sevenn makes float32 inputs: match the model
            if torch.is_tensor(value) and value.is_floating_point():
                data[key] = value.to(self.device, self._torch_dtype)
            elif torch.is_tensor(value):
                data[key] = value.to(self.device)
        if self.modal is not None:
            data[KEY.DATA_MODALITY] = self.modal
        with torch.enable_grad():
            output = self.model(data)
        energy = output[KEY.PRED_TOTAL_ENERGY].detach().to(torch.float64).cpu().item()
        atomic = output[KEY.ATOMIC_ENERGY].detach().to(torch.float64).cpu().numpy().reshape(-1)
        out = {"energy": energy, "energies": atomic}
        if forces:
            out["forces"] = output[KEY.PRED_FORCE].detach().to(torch.float64).cpu().numpy()
        if stress:
            from ase.stress import voigt_6_to_full_3x3_stress

            # SevenNet's virial order (xx, yy, zz, xy, yz, zx), sign as its calculator's
            virial = output[KEY.PRED_STRESS].detach().to(torch.float64).cpu().numpy()
            out["stress"] = voigt_6_to_full_3x3_stress(-virial[[0, 1, 2, 4, 5, 3]])
        return out

    def describe(self) -> dict:
        from importlib.metadata import version

        if self._hash is None:  # once: logs name the exact checkpoint (10-15 MB)
            self._hash = file_sha256(self.path)
        return {
            "backend": "SevenNetBackend",
            "model": self.name,
            "model_name": self.name,
            "model_file": str(self.path),
            "model_sha256": self._hash,
            "modal": self.modal or "",
            "sevenn_version": version("sevenn"),
            "dtype": self.dtype,
            "device": str(self.device),
            "packed": True,
        }


def _without_forces(model):
    """The same model (shared weights) without its force output module."""
    import copy
    from collections import OrderedDict

    energy_model = copy.copy(model)
    energy_model._modules = OrderedDict((k, m) for k, m in model._modules.items() if k != "force_output")
    return energy_model


def _rebuilt_in_float64(checkpoint, model32):
    """The same SevenNet model in float64: rebuilt with float64 as the default dtype
    (e3nn fixes some tensors' dtype when the model is built) and given the float32
    model's weights, cast. Its one-hot embedding makes float32 inputs whatever the
    default, so its output is cast on the way."""
    import torch
    from sevenn.model_build import build_E3_equivariant_model

    state = {k: (v.double() if v.is_floating_point() else v) for k, v in model32.state_dict().items()}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = build_E3_equivariant_model(dict(checkpoint.config))
    finally:
        torch.set_default_dtype(previous)
    model.load_state_dict(state, strict=True)
    onehot = model._modules.get("onehot_idx_to_onehot")
    if onehot is not None:
        keys = [k for k in (onehot.key_output, onehot.key_additional_output) if k is not None]

        def cast(module, inputs, data):
            for key in keys:
                if key in data and data[key].is_floating_point():
                    data[key] = data[key].to(torch.float64)
            return data

        onehot.register_forward_hook(cast)
    return model


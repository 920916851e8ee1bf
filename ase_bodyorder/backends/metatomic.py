"""metatomic models as a backend: many subclusters packed into one system.

Packing (docs/design.md, Packing): every subcluster goes into ONE ``System``; each
neighbour list the model requests is built within each subcluster only, so the
subclusters cannot see each other whatever their positions; the model returns per-atom
energies, which are summed per subcluster in float64. One backward pass of their sum
gives every atom's force within its own subcluster, since subclusters share no pairs.
Models without per-atom energies fall back to one ``System`` per subcluster in a list.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import ase
import numpy as np
import torch

from ..torch_compat import plain_index_select

with plain_index_select():  # any import order with torch_geometric (torch_compat.py)
    from metatensor.torch import Labels, TensorBlock
    from metatomic.torch import (
        AtomisticModel,
        ModelEvaluationOptions,
        ModelOutput,
        System,
        load_atomistic_model,
        pick_device,
        pick_output,
    )

from ..errors import InputError
from .base import Backend, ClusterBatch, file_sha256
from .packing import intra_cluster_pairs

__all__ = ["MetatomicBackend", "load_model"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_XYZ = Labels("xyz", torch.tensor([[0], [1], [2]]))
_DISTANCE = Labels("distance", torch.tensor([[0]]))
_NL_NAMES = ["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"]


#: Python packages that register TorchScript extensions exported models may use
#: (SOAP-BPNN needs sphericart's); importing one makes its operations available
_EXTENSION_PACKAGES = ("sphericart.torch", "featomic.torch")


def _import_extension_packages() -> list[str]:
    import importlib

    found = []
    for name in _EXTENSION_PACKAGES:
        try:
            importlib.import_module(name)
            found.append(name)
        except ImportError:
            pass
    return found


def load_model(model: str | os.PathLike | AtomisticModel, extensions_directory=None):
    """Load an exported metatomic model, with errors that say what went wrong.

    A model needing TorchScript extensions loads when their Python package is
    installed (e.g. ``sphericart-torch``), or from ``extensions_directory``.
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"model file '{path}' does not exist")
        if path.is_dir():
            raise IsADirectoryError(f"model path '{path}' is a directory, not a .pt file")
        # the extensions' Python packages first (e.g. sphericart-torch for SOAP-BPNN):
        # loaded this way, metatomic finds them and does not warn that they are missing
        _import_extension_packages()
        try:
            return load_atomistic_model(str(path), extensions_directory=extensions_directory)
        except Exception as error:  # torch raises several types for a bad archive
            raise InputError(
                f"could not load a metatomic model from '{path}' (corrupt file, or not "
                f"an exported AtomisticModel): {str(error).splitlines()[0]}"
            ) from error
    if isinstance(model, torch.jit.RecursiveScriptModule):
        if model.original_name != "AtomisticModel":
            raise TypeError(f"expected a metatomic AtomisticModel, got {model.original_name}")
        return model
    if isinstance(model, AtomisticModel):
        return model
    raise TypeError(f"cannot use {type(model).__name__} as a metatomic model")


class MetatomicBackend(Backend):
    """Evaluate subclusters with a metatomic model.

    :param model: path to an exported ``.pt`` model, or a loaded ``AtomisticModel``
    :param device: torch device; default: the model's preferred available device
    :param variant: energy variant to use (``energy/<variant>``), if the model has several
    :param extensions_directory: where compiled extensions of the model live
    :param jit_optimize: let TorchScript specialise and fuse the model for the input
        shapes it sees. Off by default: subcluster batches change shape at every call,
        so the specialisation is redone again and again (measured on CPU with PET: the
        first call 20x and later calls 2x faster without it). Only our own calls are
        affected (a scoped setting).
    """

    def __init__(
        self,
        model,
        device: str | None = None,
        variant: str | None = None,
        extensions_directory=None,
        jit_optimize: bool = False,
    ):
        self.jit_optimize = bool(jit_optimize)
        self.path = Path(model) if isinstance(model, (str, os.PathLike)) else None
        self.model = load_model(model, extensions_directory)
        capabilities = self.model.capabilities()
        try:
            self.device = torch.device(pick_device(capabilities.supported_devices, device))
        except RuntimeError as error:  # a device this machine or this model does not have
            # metatomic's message carries a C++ backtrace after its first line
            raise InputError(f"device {device!r}: {str(error).splitlines()[0]}") from None
        with warnings.catch_warnings():
            # metatensor-torch's notice about models exported with an older metatensor-learn
            warnings.filterwarnings("ignore", message=".*_mts_buffer_names.*")
            self.model = self.model.to(self.device)
        if capabilities.dtype not in _DTYPES:
            raise InputError(f"model has unsupported dtype {capabilities.dtype!r}")
        self.dtype = capabilities.dtype
        self._torch_dtype = _DTYPES[self.dtype]
        outputs = capabilities.outputs
        if not any(key == "energy" or key.startswith("energy/") for key in outputs.keys()):
            raise InputError("this metatomic model has no energy output")
        self.energy_key = pick_output("energy", outputs, variant)
        self.atomic_types = sorted(int(t) for t in capabilities.atomic_types)
        self.packed = outputs[self.energy_key].sample_kind == "atom"
        self.requests = list(self.model.requested_neighbor_lists())
        self._cutoffs = [float(o.engine_cutoff("angstrom")) for o in self.requests]
        self.default_cutoff = max(self._cutoffs) if self._cutoffs else 0.0
        self.metadata = self.model.metadata()
        self._hash = file_sha256(self.path) if self.path is not None else None
        self._full_calculator = None

    # ------------------------------------------------------------------------------

    def _options(self, per_atom: bool) -> ModelEvaluationOptions:
        output = ModelOutput(unit="eV", sample_kind="atom" if per_atom else "system")
        return ModelEvaluationOptions(length_unit="angstrom", outputs={self.energy_key: output})

    def _system(self, positions: torch.Tensor, numbers: np.ndarray, ptr: np.ndarray) -> System:
        """One non-periodic system whose neighbour lists stay within each cluster."""
        system = System(
            types=torch.from_numpy(numbers.astype(np.int32)).to(self.device),
            positions=positions,
            cell=torch.zeros((3, 3), dtype=self._torch_dtype, device=self.device),
            pbc=torch.zeros(3, dtype=torch.bool, device=self.device),
        )
        for options, cutoff in zip(self.requests, self._cutoffs):
            i, j = intra_cluster_pairs(positions, ptr, cutoff, options.full_list)
            zeros = torch.zeros_like(i)
            samples = Labels(_NL_NAMES, torch.stack([i, j, zeros, zeros, zeros], dim=1).to(torch.int32))
            vectors = (positions[j] - positions[i]).reshape(-1, 3, 1)
            block = TensorBlock(
                vectors, samples, [_XYZ.to(self.device)], _DISTANCE.to(self.device)
            )
            system.add_neighbor_list(options, block)
        return system

    def evaluate(self, batch: ClusterBatch, forces: bool):
        positions = torch.from_numpy(batch.positions).to(self.device, self._torch_dtype)
        positions.requires_grad_(forces)
        if self.packed:
            return self._evaluate_packed(batch, positions, forces)
        return self._evaluate_list(batch, positions, forces)

    def _evaluate_packed(self, batch: ClusterBatch, positions: torch.Tensor, forces: bool):
        system = self._system(positions, batch.numbers, batch.ptr)
        return self.run_packed(system, batch, positions, forces)

    def run_packed(self, system: System, batch: ClusterBatch, positions: torch.Tensor, forces: bool):
        """The model call on a prepared packed system (separate so benchmarks can
        time the model alone)."""
        with torch.set_grad_enabled(forces), torch.jit.optimized_execution(self.jit_optimize):
            outputs = self.model([system], self._options(per_atom=True), check_consistency=False)
            block = outputs[self.energy_key].block()
            values = block.values.reshape(-1)
            f = None
            if forces:
                (grad,) = torch.autograd.grad(values.sum(), positions)
                f = -grad.to(torch.float64).cpu().numpy()
        atom = block.samples.column("atom").to(torch.int64)
        cluster = torch.from_numpy(batch.cluster_of_atom()).to(self.device)[atom]
        # sum in float64 whatever the model's dtype: MBE differences amplify round-off
        energies = torch.zeros(batch.n_clusters, dtype=torch.float64, device=self.device)
        energies.index_add_(0, cluster, values.detach().to(torch.float64))
        return energies.cpu().numpy(), f

    def _evaluate_list(self, batch: ClusterBatch, positions: torch.Tensor, forces: bool):
        systems = []
        for m in range(batch.n_clusters):
            a, b = int(batch.ptr[m]), int(batch.ptr[m + 1])
            systems.append(self._system(positions[a:b], batch.numbers[a:b], np.array([0, b - a])))
        with torch.set_grad_enabled(forces), torch.jit.optimized_execution(self.jit_optimize):
            outputs = self.model(systems, self._options(per_atom=False), check_consistency=False)
            values = outputs[self.energy_key].block().values.reshape(-1)
            f = None
            if forces:
                (grad,) = torch.autograd.grad(values.sum(), positions)
                f = -grad.to(torch.float64).cpu().numpy()
        return values.detach().to(torch.float64).cpu().numpy(), f

    def evaluate_full(self, atoms: ase.Atoms, forces: bool, stress: bool) -> dict:
        # the plain model, periodic or not: metatomic's own ASE calculator does this
        if self._full_calculator is None:
            from metatomic_ase import MetatomicCalculator

            self._full_calculator = MetatomicCalculator(self.model, device=str(self.device))
        result = self._full_calculator.compute_energy(
            atoms, compute_forces_and_stresses=forces or stress, per_atom=self.packed
        )
        out = {"energy": float(result["energy"])}
        if "energies" in result:
            out["energies"] = np.asarray(result["energies"], dtype=np.float64)
        if forces:
            out["forces"] = np.asarray(result["forces"], dtype=np.float64)
        if stress and "stress" in result:
            out["stress"] = np.asarray(result["stress"], dtype=np.float64)
        return out

    def describe(self) -> dict:
        return {
            "backend": "MetatomicBackend",
            "model": str(self.path) if self.path is not None else self.metadata.name,
            "model_name": self.metadata.name,
            "model_sha256": self._hash or "",
            "dtype": self.dtype,
            "device": str(self.device),
            "packed": self.packed,
        }

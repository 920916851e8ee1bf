"""A model truncated at body order K, exported as a metatomic model (docs/export.md).

:func:`export_truncated` writes one TorchScript file: a metatomic ``AtomisticModel``
whose ``forward`` (``truncated_model.TruncatedModel``) enumerates the connected sets of
at most K atoms from the engine's neighbour list, evaluates the wrapped model on them
packed into few calls, and returns E^(K), its per-atom shares and every dE_k. Any engine
that runs metatomic models runs it, with nothing of ase-bodyorder installed.
:func:`describe_model_file` says what such a file holds, without loading it.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import zipfile
from pathlib import Path

import torch

from .torch_compat import plain_index_select

with plain_index_select():  # any import order with torch_geometric (torch_compat.py)
    from metatomic.torch import (
        AtomisticModel,
        ModelCapabilities,
        ModelMetadata,
        ModelOutput,
        load_atomistic_model,
        pick_output,
    )

from .backends.base import file_sha256
from .backends.chgnet import is_chgnet_model
from .backends.sevennet import is_sevennet_model
from .errors import InputError
from .models import list_models, resolve_model
from .truncated_model import DE_OUTPUT, TruncatedModel

__all__ = ["MAX_EXPORT_ORDER", "describe_model_file", "export_truncated"]

#: the largest body order the export supports (and the tests cover)
MAX_EXPORT_ORDER = 4
#: atoms per call of the wrapped model (whole subclusters: at most K - 1 more)
DEFAULT_MAX_ATOMS_PER_CHUNK = 16384
#: name of our own entry among the file's extra files
_EXTRA = "ase-bodyorder"
#: Python packages whose import registers a TorchScript extension named in a file
_EXTENSION_PACKAGES = {"sphericart_torch": "sphericart.torch", "featomic_torch": "featomic.torch"}


def _check_order(max_order) -> int:
    if isinstance(max_order, bool) or not isinstance(max_order, int) or not 1 <= max_order <= MAX_EXPORT_ORDER:
        raise InputError(f"the export supports body orders 1 to {MAX_EXPORT_ORDER}, got {max_order!r}")
    return max_order


def _check_destination(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"'{path}' is a directory, not a file name")
    if path.exists() and not overwrite:
        raise InputError(f"'{path}' exists: pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise InputError(f"the folder '{path.parent}' of '{path}' does not exist")
    return path


def _model_path(model) -> Path:
    """The ``.pt`` file of a shipped model's name or of a path; refuses the rest."""
    from ase.calculators.calculator import BaseCalculator

    if isinstance(model, BaseCalculator):
        raise InputError(
            "an ASE calculator cannot be exported (it is not TorchScript): give a "
            f"metatomic .pt file or a shipped model's name ({', '.join(list_models())})"
        )
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"cannot export {type(model).__name__}: give a metatomic .pt file or a shipped model's name")
    if is_sevennet_model(str(model)) or is_chgnet_model(str(model)):
        kind = "SevenNet" if is_sevennet_model(str(model)) else "CHGNet"
        raise InputError(
            f"{kind} model '{model}' cannot be exported (it is not a metatomic model): "
            "use it through BodyOrderCalculator, or export a metatomic .pt file"
        )
    path = resolve_model(model)
    if not path.is_file():
        raise InputError(f"model '{model}' is neither a shipped model ({', '.join(list_models())}) nor a file")
    return path


def _extra_files(path: Path) -> dict[str, str]:
    """The extra files of a TorchScript archive (``<archive>/extra/<name>``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                name.split("/extra/", 1)[1]: archive.read(name).decode()
                for name in archive.namelist()
                if "/extra/" in name and not name.endswith("/")
            }
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"'{path}' is not a TorchScript model file: {error}") from error


def _load_wrapped(path: Path):
    """Load a metatomic model, importing the Python packages of its extensions first."""
    for extension in json.loads(_extra_files(path).get("extensions", "[]")):
        package = _EXTENSION_PACKAGES.get(extension["name"])
        if package is not None:
            try:
                importlib.import_module(package)
            except ImportError:
                pass  # metatomic's loader then says what is missing
    try:
        return load_atomistic_model(str(path))
    except Exception as error:  # torch raises several types for a bad archive
        raise InputError(f"could not load a metatomic model from '{path}': {str(error).splitlines()[0]}") from error


def _energy_output(model, variant: str | None) -> str:
    """The wrapped model's energy output; refuses what the export cannot use."""
    outputs = model.capabilities().outputs
    if not any(key == "energy" or key.startswith("energy/") for key in outputs.keys()):
        raise InputError("this metatomic model has no 'energy' output: nothing to truncate")
    try:
        key = pick_output("energy", outputs, variant)
    except Exception as error:
        raise InputError(f"no energy variant {variant!r} in this model: {error}") from error
    if outputs[key].sample_kind != "atom":
        raise InputError(f"the model's '{key}' output has no per-atom energies, which the export needs to pack subclusters")
    if len(model.requested_inputs(use_new_names=True)) != 0:
        raise InputError("the model requests extra inputs (charges, spins, ...): the export cannot pass them to subclusters")
    if not model.requested_neighbor_lists():
        raise InputError("the model requests no neighbour list: it has no cutoff to expand in")
    return key


def _capabilities(wrapped: ModelCapabilities, energy_key: str, max_order: int, cutoff: float) -> ModelCapabilities:
    unit = wrapped.outputs[energy_key].unit
    outputs = {"energy": ModelOutput(unit=unit, sample_kind="atom", description=f"E^({max_order}), the many-body expansion truncated at {max_order} bodies; per atom: each eps(S) shared equally among the atoms of S")}
    for k in range(1, max_order + 1):
        outputs[DE_OUTPUT.format(k)] = ModelOutput(unit=unit, sample_kind="atom", description=f"dE_{k}, the contribution of the {k}-body terms to the energy")
    return ModelCapabilities(
        outputs=outputs,
        atomic_types=list(wrapped.atomic_types),
        # ghosts a subcluster needs: K - 1 hops of at most rc from a local atom
        interaction_range=(max_order - 1) * cutoff,
        length_unit=wrapped.length_unit,
        supported_devices=list(wrapped.supported_devices),
        dtype=wrapped.dtype,
    )


def _metadata(wrapped: ModelMetadata, label: str, info: dict) -> ModelMetadata:
    references = {key: list(value) for key, value in wrapped.references.items()}
    extra = dict(wrapped.extra)
    extra.update({f"ase-bodyorder::{key}": str(value) for key, value in info.items()})
    return ModelMetadata(
        name=f"{wrapped.name or label} truncated at body order {info['max_order']}",
        description=(
            f"The many-body expansion of {label} truncated at {info['max_order']} bodies "
            f"(cutoff {info['cutoff']} {info['length_unit']}), exported by ase-bodyorder. "
            + (wrapped.description or "")
        ).strip(),
        authors=list(wrapped.authors),
        references=references,
        extra=extra,
    )


def _save(model: AtomisticModel, path: Path, wrapped_extras: dict[str, str], info: dict) -> None:
    """metatomic's ``AtomisticModel.save``, declaring the wrapped model's extensions
    (not every extension loaded in this process) and our own description."""
    from metatomic.torch import __version__ as metatomic_version

    with plain_index_select():  # sevenn may have replaced torch.index_select
        scripted = torch.jit.script(model.eval())
    extras = {
        "torch-version": torch.__version__,
        "metatomic-version": metatomic_version,
        "extensions": wrapped_extras.get("extensions", "[]"),
        "extensions-deps": wrapped_extras.get("extensions-deps", "[]"),
        "export-metadata": json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "platform": platform.machine() + "-" + platform.system()}),
        "model-metadata": scripted.metadata().__getstate__()[0],
        _EXTRA: json.dumps(info, indent=2),
    }
    # written next to the destination, then renamed: no half-written file on failure
    partial = path.with_name(path.name + ".partial")
    try:
        torch.jit.save(scripted.to("cpu"), str(partial), _extra_files=extras)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def export_truncated(
    model: str | os.PathLike,
    max_order: int,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    variant: str | None = None,
    max_atoms_per_chunk: int = DEFAULT_MAX_ATOMS_PER_CHUNK,
) -> Path:
    """Write the model truncated at body order ``max_order`` as a metatomic model.

    :param model: a metatomic ``.pt`` file, or a shipped model's name (``"default"``,
        ``"pet-h-fci"``, ...)
    :param max_order: the body order K, 1 to :data:`MAX_EXPORT_ORDER`
    :param path: the ``.pt`` file to write
    :param overwrite: replace ``path`` if it exists
    :param variant: the energy variant (``energy/<variant>``) of a model with several
    :param max_atoms_per_chunk: atoms per call of the wrapped model (whole subclusters)
    :returns: ``path``
    :raises InputError: before anything is written, for a model that cannot be
        exported (an ASE calculator, a SevenNet model, no per-atom ``energy`` output,
        extra inputs), an unsupported ``max_order``, or an existing ``path`` without
        ``overwrite``
    """
    max_order = _check_order(max_order)
    destination = _check_destination(path, overwrite)
    if int(max_atoms_per_chunk) < 1:
        raise InputError(f"max_atoms_per_chunk must be >= 1, got {max_atoms_per_chunk}")
    source = _model_path(model)
    wrapped = _load_wrapped(source)
    energy_key = _energy_output(wrapped, variant)
    capabilities = wrapped.capabilities()
    requests = list(wrapped.requested_neighbor_lists())
    cutoff = max(float(options.cutoff) for options in requests)
    info = {
        "max_order": max_order,
        "cutoff": cutoff,
        "length_unit": capabilities.length_unit,
        "energy_unit": capabilities.outputs[energy_key].unit,
        "wrapped_model": source.stem if source.parent == resolve_model("default").parent else str(source),
        "wrapped_sha256": file_sha256(source),
        "wrapped_energy_output": energy_key,
        "max_atoms_per_chunk": int(max_atoms_per_chunk),
    }
    module = TruncatedModel(wrapped.module, max_order, cutoff, energy_key, info["energy_unit"], requests, int(max_atoms_per_chunk))
    truncated = AtomisticModel(module.eval(), _metadata(wrapped.metadata(), source.stem, info), _capabilities(capabilities, energy_key, max_order, cutoff))
    info["outputs"] = sorted(truncated.capabilities().outputs.keys())
    _save(truncated, destination, _extra_files(source), info)
    return destination


def describe_model_file(path: str | os.PathLike) -> str:
    """What a metatomic ``.pt`` file holds, read from its archive (nothing loaded): its
    name, and for a file written by :func:`export_truncated` K, the cutoff, the wrapped
    model and the outputs; the TorchScript extensions it needs.

    :raises InputError: the file does not exist or is not a TorchScript archive
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"'{path}' is not a file")
    extras = _extra_files(path)
    if "model-metadata" not in extras:
        raise InputError(f"'{path}' is not a metatomic model (no model metadata in the archive)")
    metadata = json.loads(extras["model-metadata"])
    extensions = [e["name"] for e in json.loads(extras.get("extensions", "[]"))]
    lines = [f"{path}: metatomic model '{metadata.get('name') or '(unnamed)'}'"]
    if _EXTRA in extras:
        info = json.loads(extras[_EXTRA])
        lines += [
            f"  body order K: {info['max_order']} (exported by ase-bodyorder)",
            f"  cutoff: {info['cutoff']:g} {info['length_unit']}; interaction range {(info['max_order'] - 1) * info['cutoff']:g} {info['length_unit']}",
            f"  wrapped model: {info['wrapped_model']} (sha256 {info['wrapped_sha256'][:12]}..., output '{info['wrapped_energy_output']}')",
            f"  outputs: {', '.join(info['outputs'])} ({info['energy_unit']})",
        ]
    else:
        lines.append("  not a truncated model (no ase-bodyorder description inside)")
    card = path.with_suffix(".json")  # a shipped or fitted model's card, beside it
    if card.is_file():
        try:
            summary = json.loads(card.read_text())
        except ValueError:
            summary = {}
        if "max_order" in summary:
            lines.append(f"  body order K: {summary['max_order']} (explicit: a linear model, {card.name})")
        if summary.get("summary"):
            lines.append(f"  card {card.name}: {summary['summary']}")
    lines.append(f"  extensions: {', '.join(extensions) if extensions else 'none'}")
    lines.append(f"  metatomic {extras.get('metatomic-version', '?')}, torch {extras.get('torch-version', '?')}")
    return "\n".join(lines)

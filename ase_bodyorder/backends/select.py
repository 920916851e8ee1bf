"""Which backend evaluates a model, and how output names the model.

The one place that turns what a user gives as a model (a file, a shipped, SevenNet or
CHGNet name, a loaded model, an ASE calculator, a batched function, a backend) into a
:class:`~ase_bodyorder.backends.Backend`. Heavy backends (torch) are imported only when
such a model is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from ase.calculators.calculator import BaseCalculator

from ..errors import InputError
from .base import Backend

__all__ = ["make_backend", "model_label"]


def make_backend(
    model,
    device: str | None = None,
    *,
    variant: str | None = None,
    extensions_directory=None,
    dtype: str | None = None,
) -> Backend:
    """A backend for a metatomic model (path, ``"default"`` or a shipped model's name,
    loaded model), a SevenNet model (``"sevennet-0"``, another pretrained name, or a
    ``.pth`` checkpoint), a native MACE model (a mace-torch ``.model`` file), a CHGNet
    model (``"chgnet"``, ``"chgnet-r2scan"``, ... or a loaded ``CHGNet``), any ASE
    calculator, a batched function of a list of ``ase.Atoms`` (wrapped as a
    :class:`~ase_bodyorder.backends.callable.BatchedCallableBackend` without a cutoff
    of its own, returning energies and forces), or a ready
    :class:`~ase_bodyorder.backends.Backend`.

    ``variant`` (the energy output ``energy/<variant>``) and ``extensions_directory``
    are passed to metatomic, as metatomic's own calculator takes them; for a MACE model
    ``variant`` is the head of a multi-head model. ``dtype`` chooses SevenNet's,
    MACE's and CHGNet's precision (default float64); a metatomic model computes in its own dtype,
    which ``dtype`` must then equal.
    """
    if isinstance(model, Backend):
        return model
    if isinstance(getattr(model, "backend", None), Backend):  # a BodyOrderCalculator
        raise TypeError(
            "a BodyOrderCalculator is not a model: give its model, or pass the calculator itself "
            "as calculator= (decompose) where that is taken"
        )
    if isinstance(model, BaseCalculator):
        if variant is not None or extensions_directory is not None or dtype is not None:
            raise InputError("variant, extensions_directory and dtype apply to models, not ASE calculators")
        from .ase_calculator import AseCalculatorBackend

        return AseCalculatorBackend(model)
    from .mace import MaceBackend, is_mace_model

    if is_mace_model(model):  # a native mace-torch .model file (variant: the head)
        if extensions_directory is not None:
            raise InputError("extensions_directory applies to metatomic models, not MACE")
        return MaceBackend(model, dtype=dtype or "float64", device=device, head=variant)
    from .sevennet import SevenNetBackend, is_sevennet_model

    if is_sevennet_model(model):
        if variant is not None or extensions_directory is not None:
            raise InputError("variant and extensions_directory apply to metatomic models, not SevenNet")
        return SevenNetBackend(model, dtype=dtype or "float64", device=device)
    from .chgnet import ChgnetBackend, is_chgnet_model

    if is_chgnet_model(model):  # a pretrained name ("chgnet", ...) or a loaded CHGNet
        if variant is not None or extensions_directory is not None:
            raise InputError("variant and extensions_directory apply to metatomic models, not CHGNet")
        return ChgnetBackend(model, dtype=dtype or "float64", device=device)
    from .callable import BatchedCallableBackend, is_batched_function

    if is_batched_function(model):  # a bare function: the cutoff is the calculator's, as for ASE
        if variant is not None or extensions_directory is not None or dtype is not None or device is not None:
            raise InputError(
                "variant, extensions_directory, dtype and device apply to models, not to a function: "
                "give dtype to BatchedCallableBackend"
            )
        return BatchedCallableBackend(model, None)
    from ..models import resolve_model
    from .metatomic import MetatomicBackend

    if isinstance(model, (str, os.PathLike)):
        model = resolve_model(model)
    backend = MetatomicBackend(model, device=device, variant=variant, extensions_directory=extensions_directory)
    if dtype is not None and dtype != backend.dtype:
        raise InputError(f"this metatomic model computes in {backend.dtype}, not {dtype}: its dtype is fixed at export")
    return backend


def model_label(model, backend: Backend | None = None, *, short: bool = False) -> str:
    """How output names a model: a path or name as given (``short``: a file's stem,
    and the default model's own name for ``"default"``); for an object, the model name
    its ``backend`` reports, else its class."""
    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        if not short:
            return text
        if text == "default":
            from ..models import DEFAULT_MODEL

            return DEFAULT_MODEL
        return Path(text).stem if text.endswith((".pt", ".pth", ".ckpt", ".model")) else text
    if backend is not None:
        return str(backend.describe().get("model", type(model).__name__))
    return type(model).__name__

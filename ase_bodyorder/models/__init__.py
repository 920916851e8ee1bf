"""Models shipped inside the package (trained here on FCI references, see README).

Each ``<name>.pt`` comes with ``<name>.json``, its model card.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "default_model", "list_models", "model_card", "resolve_model"]

_HERE = Path(__file__).parent
#: name of the model used when none is given
DEFAULT_MODEL = "pet-h-fci"


def list_models() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.stem for p in _HERE.glob("*.pt"))


def _path(name: str) -> Path:
    path = _HERE / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"no shipped model named {name!r}; shipped models: {list_models() or 'none'}"
        )
    return path


def default_model() -> Path:
    """Path of the shipped default model."""
    return _path(DEFAULT_MODEL)


def model_card(name: str = DEFAULT_MODEL) -> dict:
    """The model card (data, level of theory, splits, errors, dtype, cutoff)."""
    _path(name)
    return json.loads((_HERE / f"{name}.json").read_text())


def resolve_model(model: str | os.PathLike) -> Path:
    """``"default"`` or a shipped model's name gives its path; anything else is a path."""
    text = str(model)
    if text == "default":
        return default_model()
    if not Path(text).exists() and text in list_models():
        return _path(text)
    return Path(text)

"""ASE calculators named by text: ``fci``, ``MODULE:NAME`` or ``FILE.py:NAME``.

What ``compare --reference`` and ``curves --reference`` take, for Python users too
(:func:`load_calculator`). ``NAME`` is a calculator made in the module, its class, or a
function that makes one without arguments. Modules are found with
:func:`pkgutil.resolve_name`, files run with :func:`runpy.run_path`, as ``python FILE.py``
would run them (their folder first on ``sys.path``, for their own imports).
"""

from __future__ import annotations

import pkgutil
import runpy
import sys
from pathlib import Path

from .errors import InputError

__all__ = ["load_calculator", "load_object"]


def load_object(text: str):
    """The object ``NAME`` of ``MODULE:NAME`` or ``FILE.py:NAME``; errors raised while
    importing the user's code are reported as that code's, in one line."""
    module, _, name = text.rpartition(":")
    if not module or not name:
        raise InputError(f"expected MODULE:NAME or FILE.py:NAME, got '{text}'")
    if module.endswith(".py"):
        return _from_file(module, name)
    try:
        return pkgutil.resolve_name(f"{module}:{name}")
    except AttributeError:
        raise InputError(f"{module} has no {name}") from None
    except ImportError as error:
        raise InputError(
            f"cannot import {module} ({error}) (a module of your own: give FILE.py:NAME, or put its "
            "folder on PYTHONPATH)"
        ) from None
    except Exception as error:  # the user's own code failed while importing
        raise InputError(f"importing {module} failed: {type(error).__name__}: {error}") from None


def _from_file(path: str, name: str):
    file = Path(path)
    if not file.is_file():
        raise InputError(f"cannot import {path} (file '{path}' does not exist)")
    sys.path.insert(0, str(file.resolve().parent))
    try:
        namespace = runpy.run_path(str(file), run_name=file.stem)
    except ImportError as error:
        raise InputError(f"cannot import {path} ({error})") from None
    except Exception as error:  # the user's own code failed while running
        raise InputError(f"importing {path} failed: {type(error).__name__}: {error}") from None
    finally:
        sys.path.remove(str(file.resolve().parent))
    if name not in namespace:
        raise InputError(f"{path} has no {name}")
    return namespace[name]


def load_calculator(text: str):
    """An ASE calculator from ``fci`` (FCI/STO-3G, :class:`~ase_bodyorder.fci.FCICalculator`),
    ``MODULE:NAME`` or ``FILE.py:NAME``: a calculator object is taken as it is; a class
    or function is called without arguments."""
    from ase.calculators.calculator import BaseCalculator

    if text.lower() == "fci":
        from .fci import FCICalculator

        return FCICalculator()
    factory = load_object(text)
    name = text.rpartition(":")[2]
    if isinstance(factory, BaseCalculator):
        return factory  # a calculator made in the module
    if not callable(factory):
        raise InputError(
            f"{name} is an object of type {type(factory).__name__}, "
            "not an ASE calculator, its class or a function that makes one"
        )
    try:
        calculator = factory()
    except Exception as error:
        raise InputError(
            f"calling {name}() without arguments failed ({type(error).__name__}: {error}); "
            "give a class or function that makes the calculator without arguments"
        ) from None
    if not isinstance(calculator, BaseCalculator):
        raise InputError(f"{name}() gave an object of type {type(calculator).__name__}, not an ASE calculator")
    return calculator

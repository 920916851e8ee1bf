"""Importing and scripting TorchScript code after torch_geometric.

torch_geometric (which sevenn imports) replaces ``torch.index_select`` with a Python
function. TorchScript then fails to compile code that calls it, such as
metatensor-operations when ``metatensor.torch`` is first imported ("Expected a value of
type 'int' for argument 'dim' but instead found type 'str'"). Every module of the
package that imports metatensor, metatomic or featomic's torch code, or scripts a
model, does so inside :func:`plain_index_select`, so that any import order works.

The bottom layer: imports nothing of the package, and torch only when called.
"""

from __future__ import annotations

import contextlib
import sys

__all__ = ["plain_index_select"]


@contextlib.contextmanager
def plain_index_select():
    """torch's own ``index_select`` for the duration (a no-op unless something replaced it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        import torch
    builtin = torch._C._VariableFunctions.index_select
    current = torch.index_select
    if current is builtin:
        yield
        return
    torch.index_select = builtin
    try:
        yield
    finally:
        torch.index_select = current

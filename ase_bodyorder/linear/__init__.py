"""Explicitly body-ordered linear models (arXiv 2502.16125's instrument): a linear model
per species on body-ordered correlations of the neighbour density, fitted by ridge
regression on energies and forces and written as a metatomic model (docs/linear.md).

Needs featomic and featomic-torch; imported only when asked for.
"""

from __future__ import annotations

__all__ = ["fit_linear_model"]


def __getattr__(name: str):
    if name == "fit_linear_model":
        from .fit import fit_linear_model

        return fit_linear_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

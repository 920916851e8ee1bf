"""The analyses of the body-order papers: dimer and trimer curves, convergence with K.

- :func:`dimer_curve`: the two-body energy eps(ij)(r) = E(ij) - E(i) - E(j) of a pair
  at distance r (the dimer curves of arXiv 2502.16125);
- :func:`trimer_curve`: the three-body energy eps(ijk) of an equilateral trimer of side
  r, i.e. E(ijk) - sum E(pairs) + sum E(atoms);
- :func:`convergence`: E^(k) for k = 1..K and the plain model's E (arXiv 2509.14146).

All evaluate isolated clusters through the same backends as the calculator.
"""

from __future__ import annotations

from dataclasses import dataclass

import ase
import numpy as np

from .backends.base import ClusterBatch
from .calculator import make_backend
from .decompose import decompose

__all__ = ["Curve", "dimer_curve", "trimer_curve", "convergence", "plot_curves"]


@dataclass
class Curve:
    """A body-order curve: ``energy[i]`` (eV) at ``distance[i]`` (A)."""

    kind: str
    species: tuple[int, ...]
    distance: np.ndarray
    energy: np.ndarray


def _energies(backend, clusters: list[tuple[list[int], np.ndarray]]) -> np.ndarray:
    sizes = [len(n) for n, _ in clusters]
    batch = ClusterBatch(
        np.concatenate([p for _, p in clusters]).astype(np.float64),
        np.concatenate([n for n, _ in clusters]).astype(np.int64),
        np.concatenate([[0], np.cumsum(sizes)]),
    )
    return backend.evaluate(batch, forces=False)[0]


def _atoms(species) -> list[int]:
    return [ase.data.atomic_numbers[s] if isinstance(s, str) else int(s) for s in species]


def dimer_curve(model, species=("H", "H"), distances=None, *, device=None) -> Curve:
    """eps(ij)(r) = E(ij at r) - E(i) - E(j), in one packed evaluation."""
    backend = make_backend(model, device)
    a, b = _atoms(species)
    backend.check_species(np.array([a, b]))
    distances = np.linspace(0.5, 5.0, 91) if distances is None else np.asarray(distances, float)
    clusters = [([a], np.zeros((1, 3))), ([b], np.zeros((1, 3)))]
    clusters += [([a, b], np.array([[0.0, 0.0, 0.0], [0.0, 0.0, d]])) for d in distances]
    e = _energies(backend, clusters)
    return Curve("dimer", (a, b), distances, e[2:] - e[0] - e[1])


def trimer_curve(model, species=("H", "H", "H"), distances=None, *, device=None) -> Curve:
    """Three-body energy eps(ijk) of an equilateral trimer of side r."""
    backend = make_backend(model, device)
    z = _atoms(species)
    backend.check_species(np.array(z))
    distances = np.linspace(0.6, 5.0, 89) if distances is None else np.asarray(distances, float)
    unit = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, np.sqrt(3) / 2, 0.0]])
    clusters = [([z[i]], np.zeros((1, 3))) for i in range(3)]
    pairs = [(0, 1), (0, 2), (1, 2)]
    for r in distances:
        positions = unit * r
        clusters += [([z[i], z[j]], positions[[i, j]]) for i, j in pairs]
        clusters.append((z, positions))
    e = _energies(backend, clusters)
    singles, rest = e[:3], e[3:].reshape(len(distances), 4)
    eps3 = rest[:, 3] - rest[:, :3].sum(axis=1) + singles.sum()
    return Curve("trimer", tuple(z), distances, eps3)


def convergence(atoms: ase.Atoms, model, max_order: int, **kwargs) -> dict:
    """E^(k), k = 1..max_order, and the plain model's energy (eV)."""
    result = decompose(atoms, model, max_order, full_model=True, **kwargs)
    return {
        "order": np.arange(1, max_order + 1),
        "truncated_energies": result.truncated_energies,
        "body_order_energies": result.body_order_energies,
        "full_energy": result.full_energy,
        "counts": result.counts,
    }


def plot_curves(curves: list[Curve], output) -> None:
    """Plot dimer/trimer curves (one panel per kind) to PNG or PDF.

    Object-oriented matplotlib only: no backend is selected, no pyplot state touched."""
    from matplotlib.figure import Figure

    kinds = sorted({c.kind for c in curves})
    fig = Figure(figsize=(5.5 * len(kinds), 4), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for curve in (c for c in curves if c.kind == kind):
            label = "-".join(ase.data.chemical_symbols[z] for z in curve.species)
            ax.plot(curve.distance, curve.energy, label=label)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("distance (A)" if kind == "dimer" else "side of the equilateral trimer (A)")
        ax.set_ylabel("$\\epsilon_2$ (eV)" if kind == "dimer" else "$\\epsilon_3$ (eV)")
        ax.set_title(f"{kind} curve")
        ax.legend()
    fig.savefig(output)

"""The analyses of the body-order papers: dimer and trimer curves, convergence with K.

- :func:`dimer_curve`: the two-body energy eps(ij)(r) = E(ij) - E(i) - E(j) of a pair
  at distance r (the dimer curves of arXiv 2502.16125);
- :func:`trimer_curve`: the three-body energy eps(ijk) of an equilateral trimer of side
  r, i.e. E(ijk) - sum E(pairs) + sum E(atoms);
- :func:`convergence`: E^(k) for k = 1..K and the plain model's E (arXiv 2509.14146);
- :func:`reference_curve`: a shipped reference dimer curve (PBE, PySCF), or one from a
  JSON file of the same layout;
- :func:`write_lammps_table`: eps_2(r) as a LAMMPS ``pair_style table`` file.

Models are anything the calculator takes (a reference ASE calculator too, evaluated
one cluster at a time); all evaluate isolated clusters through the same backends as the
calculator.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import ase
import numpy as np

from .errors import InputError, UnphysicalCurveWarning
from .backends.base import ClusterBatch
from .backends.select import make_backend, model_label
from .decomposition import decompose

__all__ = [
    "Curve",
    "REFERENCES",
    "convergence",
    "curves_csv",
    "curves_table",
    "dimer_curve",
    "plot_curves",
    "read_lammps_table",
    "short_range_turn",
    "reference_curve",
    "trimer_curve",
    "write_lammps_table",
]

#: shipped reference dimer curves: name -> file in ase_bodyorder/references/
REFERENCES = {"pbe": "pbe_dimers.json"}


@dataclass
class Curve:
    """A body-order curve: ``energy[i]`` (eV) at ``distance[i]`` (A), of ``label`` (a
    model or a reference). ``force`` is -d(energy)/d(distance) where it was computed."""

    kind: str
    species: tuple[int, ...]
    distance: np.ndarray
    energy: np.ndarray
    label: str = ""
    force: np.ndarray | None = None
    #: a reference (drawn dashed), not a model
    reference: bool = False


def _energies(backend, clusters: list[tuple[list[int], np.ndarray]]) -> np.ndarray:
    return backend.evaluate(ClusterBatch.from_clusters(clusters), forces=False)[0]


def _atoms(species) -> list[int]:
    return [ase.data.atomic_numbers[s] if isinstance(s, str) else int(s) for s in species]


def dimer_curve(
    model, species=("H", "H"), distances=None, *, device=None, label=None, forces: bool = True
) -> Curve:
    """eps(ij)(r) = E(ij at r) - E(i) - E(j), and (with ``forces``) its force -d eps/dr,
    in one packed evaluation."""
    backend = make_backend(model, device)
    a, b = _atoms(species)
    backend.check_species(np.array([a, b]))
    distances = np.linspace(0.5, 5.0, 91) if distances is None else np.asarray(distances, float)
    clusters = [([a], np.zeros((1, 3))), ([b], np.zeros((1, 3)))]
    clusters += [([a, b], np.array([[0.0, 0.0, 0.0], [0.0, 0.0, d]])) for d in distances]
    batch = ClusterBatch.from_clusters(clusters)
    forces = forces and backend.gives_forces  # an energies-only model still has a curve
    e, f = backend.evaluate(batch, forces=forces)
    # the force on the second atom along the bond (+z) is -dE/dr
    force = f[batch.ptr[2:-1] + 1, 2] if forces else None
    return Curve("dimer", (a, b), distances, e[2:] - e[0] - e[1], label or model_label(model, backend), force)


def trimer_curve(model, species=("H", "H", "H"), distances=None, *, device=None, label=None) -> Curve:
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
    return Curve("trimer", tuple(z), distances, eps3, label or model_label(model, backend))


def convergence(atoms: ase.Atoms, model, max_order: int, **kwargs) -> dict:
    """E^(k), k = 1..max_order, and the plain model's energy (eV)."""
    result = decompose(atoms, model, max_order, full_model=True, **kwargs)
    return {
        "order": np.arange(1, max_order + 1),
        "truncated_energies": result.truncated_energies,
        "body_order_energies": result.body_order_energies,
        "full_energy": result.full_energy,
        "subcluster_counts": result.subcluster_counts,
    }


def reference_curve(reference: str, species) -> Curve:
    """A reference dimer curve: a shipped one by name (:data:`REFERENCES`: ``"pbe"``,
    PBE computed with PySCF by scripts/dft_dimer_curves.py) or a JSON file of the same
    layout: ``{"A-B": {"distance_A": [...], "binding_energy_eV": [...]}, ...}``, one
    entry per pair, energies relative to the separated atoms. The points come back in
    order of increasing distance."""
    import json
    from pathlib import Path

    if reference.lower() in REFERENCES:
        name = reference.lower()
        path = Path(__file__).parent / "references" / REFERENCES[name]
        label = f"{name.upper()} (reference)"
    else:
        path = Path(reference)
        label = f"{path.stem} (reference)"
        if not path.is_file():
            raise FileNotFoundError(
                f"reference '{reference}' is neither a shipped reference ({', '.join(REFERENCES)}) nor a file"
            )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"reference '{reference}' is not a JSON file: {error}") from None
    layout = 'a JSON object {"A-B": {"distance_A": [...], "binding_energy_eV": [...]}}'
    if not isinstance(data, dict):
        raise InputError(f"reference '{reference}' must be {layout}, not a {type(data).__name__}")
    a, b = _atoms(species)
    names = [ase.data.chemical_symbols[z] for z in (a, b)]
    key = next((k for k in (f"{names[0]}-{names[1]}", f"{names[1]}-{names[0]}") if k in data), None)
    if key is None:
        pairs = ", ".join(sorted(k for k in data if "-" in k)) or "none"
        raise InputError(f"reference '{reference}' has no {names[0]}-{names[1]} curve; it has: {pairs}")
    curve = data[key]
    if not isinstance(curve, dict) or "distance_A" not in curve or "binding_energy_eV" not in curve:
        raise InputError(
            f"reference '{reference}': its {key} entry must be {{\"distance_A\": [...], \"binding_energy_eV\": [...]}}"
        )
    try:
        distance = np.asarray(curve["distance_A"], float)
        energy = np.asarray(curve["binding_energy_eV"], float)
    except (TypeError, ValueError) as error:
        raise InputError(f"reference '{reference}': {key} must hold lists of numbers ({error})") from None
    if distance.ndim != 1 or distance.shape != energy.shape or len(distance) < 2:
        raise InputError(
            f"reference '{reference}': {key} needs at least two points and as many energies as distances "
            f"(got {distance.size} distances, {energy.size} energies)"
        )
    order = np.argsort(distance, kind="stable")
    distance, energy = distance[order], energy[order]
    if not (np.all(np.isfinite(distance)) and np.all(distance > 0) and np.all(np.diff(distance) > 0)):
        raise InputError(f"reference '{reference}': {key}'s distances must be positive and distinct")
    return Curve("dimer", (a, b), distance, energy, label, reference=True)


def curves_table(curves: list[Curve], distances, reference: Curve | None = None) -> tuple[list[str], list[np.ndarray]]:
    """The columns of a table of curves at ``distances``: names (``label:kind_eV``) and
    values. A reference dimer curve comes last, at its own points when they are these
    distances, else interpolated linearly (NaN outside its range: a reference is not
    extrapolated)."""
    distances = np.asarray(distances, dtype=float)
    columns = [f"{c.label}:{c.kind}_eV" for c in curves]
    values = [np.asarray(c.energy) for c in curves]
    if reference is not None:
        columns.append(f"{reference.label}:dimer_eV")
        same = len(reference.distance) == len(distances) and np.allclose(reference.distance, distances)
        inside = (distances >= reference.distance[0]) & (distances <= reference.distance[-1])
        interpolated = np.where(inside, np.interp(distances, reference.distance, reference.energy), np.nan)
        values.append(np.asarray(reference.energy) if same else interpolated)
    return columns, values


def curves_csv(curves: list[Curve], distances, reference: Curve | None = None) -> str:
    """:func:`curves_table` as CSV: a ``distance_A`` column, then one per curve (eV, 8
    decimals; round-off below them printed without a sign)."""
    columns, values = curves_table(curves, distances, reference)
    lines = ["distance_A," + ",".join(columns)]
    for i, d in enumerate(np.asarray(distances, dtype=float)):
        lines.append(f"{d:.4f}," + ",".join(f"{v[i]:.8f}".replace("-0.00000000", "0.00000000") for v in values))
    return "\n".join(lines) + "\n"


def short_range_turn(curve: Curve) -> float | None:
    """Where a curve turns unphysical at short range, or None when it does not: when its
    lowest value lies at its shortest distance, the distance of the highest point
    between there and its deepest well further out (or of its highest point, without
    such a well). Below it the curve falls as the atoms approach, and a run that gets
    there collapses."""
    energy = np.asarray(curve.energy, dtype=float)
    if len(energy) < 3 or int(np.nanargmin(energy)) != 0:
        return None
    interior = [i for i in range(1, len(energy) - 1) if energy[i] <= energy[i - 1] and energy[i] <= energy[i + 1]]
    well = min(interior, key=lambda i: energy[i]) if interior else len(energy) - 1
    return float(curve.distance[int(np.nanargmax(energy[: well + 1]))])


def write_lammps_table(curve: Curve, path, keyword: str | None = None) -> None:
    """eps_2(r) of a dimer curve (with its forces) as a LAMMPS ``pair_style table``
    file: ``pair_style table linear N`` and ``pair_coeff I J FILE KEYWORD``. Energies
    in eV, distances in A, forces in eV/A (LAMMPS ``units metal``). LAMMPS re-spaces
    the table evenly in r^2 with its own N points: give N in the thousands
    (docs/export.md, LAMMPS pair tables). Warns (:class:`~ase_bodyorder.errors.UnphysicalCurveWarning`)
    when the curve has no repulsive wall: its lowest value at its shortest distance."""
    if curve.kind != "dimer" or curve.force is None:
        raise InputError("a LAMMPS table needs a dimer curve computed with its forces (dimer_curve)")
    names = "-".join(ase.data.chemical_symbols[z] for z in curve.species)
    turn = short_range_turn(curve)
    if turn is not None:
        warnings.warn(UnphysicalCurveWarning(
            f"the {names} table of {curve.label or 'a model'} has its lowest value, {curve.energy[0]:.4g} eV, at its "
            f"shortest distance {curve.distance[0]:g} A: below {turn:g} A the curve falls as the atoms approach "
            "(no repulsive wall), and a LAMMPS run that gets there collapses"
        ), stacklevel=2)
    keyword = keyword or f"{names.replace('-', '_')}_EPS2"
    lines = [
        f"# eps_2(r) of {curve.label or 'a model'} for {names}, written by ase-bodyorder",
        "# units metal: r in A, energy in eV, force -d(energy)/dr in eV/A",
        "",
        keyword,
        # "R lo hi" tells LAMMPS the points are evenly spaced (it then ignores the file's
        # distances): only when they are; otherwise LAMMPS reads each row's own r
        f"N {len(curve.distance)} R {curve.distance[0]:.10g} {curve.distance[-1]:.10g}"
        if np.allclose(np.diff(curve.distance), np.diff(curve.distance)[0], rtol=1e-9, atol=0)
        else f"N {len(curve.distance)}",
        "",
    ]
    for i, (r, e, f) in enumerate(zip(curve.distance, curve.energy, curve.force), start=1):
        lines.append(f"{i} {r:.10g} {e:.12g} {f:.12g}")
    with open(path, "x") as file:  # never overwrite: callers remove the old file first
        file.write("\n".join(lines) + "\n")


def read_lammps_table(path, keyword: str | None = None) -> Curve:
    """Read one section of a LAMMPS ``pair_style table`` file back (for checks)."""
    lines = [line.strip() for line in open(path) if line.strip() and not line.startswith("#")]
    start = 0 if keyword is None else lines.index(keyword)
    n = int(lines[start + 1].split()[1])
    rows = np.array([line.split() for line in lines[start + 2 : start + 2 + n]], dtype=float)
    return Curve("dimer", (), rows[:, 1], rows[:, 2], lines[start], rows[:, 3])


def plot_curves(curves: list[Curve], output=None):
    """Plot dimer/trimer curves: one panel per kind and species, one line per model,
    references dashed. Saved to ``output`` (PNG or PDF by suffix) when given; returns
    the matplotlib ``Figure``.

    Object-oriented matplotlib only: no backend is selected, no pyplot state touched."""
    from matplotlib.figure import Figure

    panels = sorted({(c.kind, c.species) for c in curves}, key=lambda p: (p[0], p[1]))
    fig = Figure(figsize=(5.0 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, species) in zip(axes, panels):
        low = []
        for curve in (c for c in curves if (c.kind, c.species) == (kind, species)):
            ax.plot(curve.distance, curve.energy, "k--" if curve.reference else "-", label=curve.label, lw=1.5)
            low.append(np.nanmin(curve.energy))
        # most of a repulsive wall hides the well: show down from the deepest well, but
        # not so deep that one curve's collapse (a model far outside its data at short
        # range) flattens the others: at most 3 times the typical well
        bottom = min(low) if low else -1.0
        typical = float(np.median(low)) if low else 0.0
        if typical < 0:
            bottom = max(bottom, 3 * typical)
        ax.set_ylim(1.15 * min(bottom, -0.1), max(0.6 * abs(bottom), 0.5))
        ax.axhline(0, color="k", lw=0.5)
        names = "-".join(ase.data.chemical_symbols[z] for z in species)
        ax.set_xlabel("distance (A)" if kind == "dimer" else "side of the equilateral trimer (A)")
        ax.set_ylabel("$\\epsilon_2$ (eV)" if kind == "dimer" else "$\\epsilon_3$ (eV)")
        ax.set_title(f"{names} {kind}")
        ax.legend(fontsize=8)
    if output is not None:
        fig.savefig(output)
    return fig

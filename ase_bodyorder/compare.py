"""Models' many-body expansions beside the reference's (arXiv 2509.14146).

For a set of clusters, eps of every subset (every connected subset with a cutoff) and
dE_k for each order, of the reference method and of each model, side by side:

    from ase_bodyorder.compare import compare_expansions, shipped_clusters
    result = compare_expansions(shipped_clusters(), ["pet-h-fci", "soap-bpnn-h-fci"])
    print(result.table())
    result.plot("orders.png")

The reference is the FCI energy of every subcluster of the shipped H8 clusters
(``"shipped"``), or any ASE calculator (e.g. :class:`~ase_bodyorder.fci.FCICalculator`),
whose subcluster energies are cached on disk, keyed by method and geometry. The models
go through the packed backend (:class:`~ase_bodyorder.BodyOrderCalculator`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import ase
import numpy as np

from .backends.select import model_label
from .errors import InputError, ReferenceFailed

__all__ = [
    "Comparison",
    "ReferenceFailed",
    "compare_expansions",
    "default_cache",
    "model_expansions",
    "reference_expansions",
    "shipped_clusters",
]

#: largest number of bodies expanded over every subset (2^n subsets) without a cutoff
MAX_BODIES_ALL_SUBSETS = 12
_SHIPPED = Path(__file__).resolve().parent / "references" / "fci_h8_mbe.json"
SHIPPED_METHOD = "FCI/STO-3G"


def shipped_clusters() -> list[ase.Atoms]:
    """The held-out H8 clusters whose every subcluster has an FCI/STO-3G energy:
    ``info["density"]`` is ``"low"`` or ``"high"``, ``info["subcluster_energies"]`` maps
    "i,j,..." (sorted atom indices) to eV, for the geometry in
    ``info["subcluster_energies_positions"]`` (a moved or sliced cluster is refused)."""
    clusters = []
    for record in json.loads(_SHIPPED.read_text()):
        atoms = ase.Atoms(f"H{len(record['positions'])}", positions=record["positions"])
        atoms.info["density"] = record["density"]
        atoms.info["subcluster_energies"] = record["energies_eV"]
        atoms.info["subcluster_energies_positions"] = np.array(record["positions"])
        clusters.append(atoms)
    return clusters


def default_cache() -> Path:
    """Where reference energies are kept: $ASE_BODYORDER_CACHE, else
    $XDG_CACHE_HOME/ase-bodyorder, else ~/.cache/ase-bodyorder."""
    if os.environ.get("ASE_BODYORDER_CACHE"):
        return Path(os.environ["ASE_BODYORDER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ase-bodyorder"


# ----------------------------------------------------------------------------------
# the expansions


#: most subsets expanded without a cutoff (every subset of 12 bodies)
MAX_SUBSETS = 2**MAX_BODIES_ALL_SUBSETS - 1


def _check_size(atoms: ase.Atoms, cutoff: float | None, max_order: int | None = None) -> None:
    from math import comb

    n = len(atoms)
    K = n if max_order is None else min(max_order, n)
    subsets = sum(comb(n, k) for k in range(1, K + 1))
    if cutoff is None and subsets > MAX_SUBSETS:
        raise InputError(
            f"a cluster of {n} bodies has {subsets} subsets of at most {K} bodies: every-subset expansions "
            f"stop at {MAX_SUBSETS} (all subsets of {MAX_BODIES_ALL_SUBSETS} bodies); give a cutoff "
            "(connected subsets only), a lower order or smaller clusters"
        )


def _plan(atoms: ase.Atoms, max_order: int | None, cutoff: float | None):
    from .mbe import plan_subclusters

    _check_size(atoms, cutoff, max_order)
    n = len(atoms)
    return plan_subclusters(atoms, n if max_order is None else min(max_order, n), cutoff)


def _method_name(calculator) -> str:
    method = getattr(calculator, "method", None)
    if isinstance(method, str):
        return method
    parameters = json.dumps(getattr(calculator, "parameters", {}), sort_keys=True, default=str)
    return f"{type(calculator).__module__}.{type(calculator).__qualname__}({parameters})"


class _EnergyCache:
    """Reference energies of isolated clusters, one JSON-lines file per method, keyed by
    species and positions (to 1e-8 A); appended as they are computed, so an interrupted
    run keeps what it had."""

    def __init__(self, folder: Path | None, method: str):
        self.method = method
        self.energies: dict[str, float] = {}
        self.file = None
        if folder is not None:
            digest = hashlib.sha256(method.encode()).hexdigest()[:16]
            self.file = Path(folder) / f"reference-{digest}.jsonl"
            if self.file.exists():
                for line in self.file.read_text().splitlines():
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line cut short by a crash
                        continue
                    self.energies[record["key"]] = record["energy"]

    @staticmethod
    def key(atoms: ase.Atoms) -> str:
        rounded = np.round(atoms.positions, 8) + 0.0  # no -0.0
        text = json.dumps([atoms.numbers.tolist(), rounded.tolist()])
        return hashlib.sha256(text.encode()).hexdigest()

    def add(self, key: str, energy: float) -> None:
        self.energies[key] = energy
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.file, "a") as out:
                out.write(json.dumps({"key": key, "energy": energy, "method": self.method}) + "\n")


def reference_expansions(
    clusters: list[ase.Atoms],
    reference="shipped",
    *,
    max_order: int | None = None,
    cutoff: float | None = None,
    cache: Path | str | None | bool = True,
    counts: dict | None = None,
) -> list[np.ndarray]:
    """dE_1..dE_K (eV) of every cluster with the reference method.

    :param reference: ``"shipped"`` (the FCI subcluster energies that come with
        :func:`shipped_clusters`), or an ASE calculator evaluated on every subcluster
    :param max_order: K (default: every order, n bodies)
    :param cutoff: None: every subset; a distance: the subsets connected within it
    :param cache: folder for the reference energies (True: :func:`default_cache`;
        None or False: no cache). Entries are keyed by the calculator's ``method``
        attribute (else its class and parameters) and the geometry: a calculator whose
        code changed keeps its old entries; clear the folder then.
    :param counts: if given, filled with how many energies were ``computed`` and taken
        from the ``cached`` file (``cache_file``)
    """
    from .mbe import assemble

    reference = _reference(reference)
    if isinstance(reference, str) and reference != "shipped":
        raise InputError(f"reference must be 'shipped', 'fci' or an ASE calculator, got {reference!r}")
    from ase.calculators.calculator import BaseCalculator

    if not isinstance(reference, (str, BaseCalculator)):
        raise InputError(f"reference must be 'shipped', 'fci' or an ASE calculator, got a {type(reference).__name__}")
    store = None
    if not isinstance(reference, str):
        folder = default_cache() if cache is True else (None if cache in (None, False) else Path(cache))
        store = _EnergyCache(folder, _method_name(reference))
    out = []
    computed = cached = 0
    for index, atoms in enumerate(clusters):
        subclusters = _plan(atoms, max_order, cutoff)
        if store is None:
            out.append(assemble(subclusters, _shipped_energies(atoms, index, subclusters))["body_order_energies"])
            continue
        energies = []
        for m, cluster in enumerate(subclusters):
            members = subclusters.parent[subclusters.ptr[m] : subclusters.ptr[m + 1]]
            key = store.key(cluster)
            if key in store.energies:
                cached += 1
            else:
                store.add(key, _reference_energy(reference, cluster, index, members, store.method))
                computed += 1
            energies.append(store.energies[key])
        out.append(assemble(subclusters, energies)["body_order_energies"])
    if counts is not None:
        counts.update(computed=computed, cached=cached, cache_file=None if store is None else store.file)
    return out


def _shipped_energies(atoms: ase.Atoms, index: int, subclusters) -> list[float]:
    """The shipped FCI energies of every subcluster of one of :func:`shipped_clusters`
    (its geometry checked once)."""
    table = atoms.info.get("subcluster_energies")
    where = atoms.info.get("subcluster_energies_positions")
    if table is not None and (where is None or np.shape(where) != atoms.positions.shape
                              or np.abs(np.asarray(where) - atoms.positions).max() > 1e-8):
        raise InputError(
            f"cluster {index} is not the geometry its shipped FCI energies belong to (moved, "
            "sliced or rebuilt): give a reference calculator (e.g. FCICalculator)"
        )
    energies = []
    for m in range(len(subclusters.ptr) - 1):
        members = subclusters.parent[subclusters.ptr[m] : subclusters.ptr[m + 1]]
        name = ",".join(map(str, sorted(members.tolist())))
        if table is None or name not in table:
            raise InputError(
                f"cluster {index} has no shipped reference energy of subcluster {name}: the "
                "'shipped' reference only covers shipped_clusters(); give a reference calculator"
            )
        energies.append(float(table[name]))
    return energies


def _reference(reference):
    """``"fci"`` as its calculator; anything else as it is."""
    if isinstance(reference, str) and reference == "fci":
        from .fci import FCICalculator

        return FCICalculator()
    return reference


def _reference_energy(calculator, cluster: ase.Atoms, index: int, members: np.ndarray, method: str) -> float:
    try:
        cluster.calc = calculator
        return float(cluster.get_potential_energy())
    except Exception as error:
        raise ReferenceFailed(
            f"the reference ({method}) failed on subcluster {sorted(members.tolist())} of cluster {index} "
            f"({cluster.get_chemical_formula()}): {type(error).__name__}: {error}"
        ) from error


def model_expansions(
    clusters: list[ase.Atoms], model, *, max_order: int | None = None, cutoff: float | None = None
) -> list[np.ndarray]:
    """dE_1..dE_K (eV) of every cluster with ``model`` (anything
    :class:`~ase_bodyorder.BodyOrderCalculator` takes), packed; the same subsets as
    :func:`reference_expansions` with the same ``max_order`` and ``cutoff``."""
    from .calculator import BodyOrderCalculator

    calculators: dict[int, BodyOrderCalculator] = {}
    out = []
    for atoms in clusters:
        K = len(atoms) if max_order is None else min(max_order, len(atoms))
        _check_size(atoms, cutoff, K)
        if K not in calculators:
            calculators[K] = BodyOrderCalculator(model, K, cutoff=cutoff, check_locality=False)
        result = calculators[K].compute_many([atoms.copy()], forces=False)[0]
        out.append(np.asarray(result["body_order_energies"]))
    return out


# ----------------------------------------------------------------------------------


#: |dE_k| below this (meV/atom) counts as zero: signs and percentages of round-off mean nothing
NEGLIGIBLE = 1e-6


def _sign(values):
    values = np.asarray(values, dtype=float)
    return np.where(np.abs(values) < NEGLIGIBLE, 0.0, np.sign(values))


def _percent(value: float, reference: float) -> float | None:
    if not np.isfinite(reference) or abs(reference) < NEGLIGIBLE:
        return None
    return 100 * float(value) / float(reference)


@dataclass
class Comparison:
    """Mean dE_k per group of clusters (e.g. density), of the reference and of each model.

    ``reference[group]`` and ``models[label][group]`` are per-cluster arrays
    (clusters x K) of dE_k in meV/atom; ``groups[group]`` counts the clusters.
    """

    reference_name: str
    groups: dict[str, int]
    reference: dict[str, np.ndarray]
    models: dict[str, dict[str, np.ndarray]]
    max_order: int
    cutoff: float | None = None
    labels: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """One row per group, model and order k >= 2: mean dE_k (meV/atom) beside the
        reference's, the percentage of it, whether the means' signs agree, and in how
        many clusters the signs agree. Values below ``NEGLIGIBLE`` meV/atom count as zero:
        their sign is round-off, and no percentage of a zero reference is given (None)."""
        rows = []
        for group in self.groups:
            ref = self.reference[group]
            for label in self.labels:
                mine = self.models[label][group]
                for k in range(2, self.max_order + 1):
                    r, m = ref[:, k - 1], mine[:, k - 1]
                    mean_r, mean_m = float(r.mean()), float(m.mean())
                    rows.append({
                        "group": group,
                        "model": label,
                        "k": k,
                        "dE_meV_per_atom": mean_m,
                        "reference_meV_per_atom": mean_r,
                        "percent_of_reference": _percent(mean_m, mean_r),
                        "sign_agrees": bool(_sign(mean_m) == _sign(mean_r)),
                        "clusters_with_sign_agreeing": int(np.sum(_sign(m) == _sign(r))),
                        "clusters": int(len(r)),
                    })
        return rows

    def table(self) -> str:
        """Text: per group, the reference's row and each model's, dE_2..dE_K in meV/atom
        with the percentage of the reference; '!' marks a wrong sign."""
        lines = []
        width = max([len(self.reference_name)] + [len(label) for label in self.labels]) + 2
        where = "every subset" if self.cutoff is None else f"subsets connected within {self.cutoff:g} A"
        for group, count in self.groups.items():
            lines.append(
                f"{group} ({count} cluster{'s' if count != 1 else ''}; {where}): mean dE_k in meV/atom "
                f"(% of {self.reference_name}; ! wrong sign)"
            )
            lines.append(f"{'':<{width}}" + "".join(f"{f'dE_{k}':>19}" for k in range(2, self.max_order + 1)))
            ref = self.reference[group].mean(axis=0)
            lines.append(f"{self.reference_name:<{width}}" + "".join(f"{v:>19.1f}" for v in ref[1:]))
            for label in self.labels:
                mine = self.models[label][group].mean(axis=0)
                cells = []
                for r, m in zip(ref[1:], mine[1:]):
                    mark = "" if _sign(m) == _sign(r) else "!"
                    percent = _percent(m, r)
                    if percent is None:
                        cells.append(f"{m:.1f}{mark}")
                    else:
                        shown = f"{round(percent)}%" if abs(percent) < 1000 else (">999%" if percent > 0 else "<-999%")
                        cells.append(f"{m:.1f} ({shown}){mark}")
                lines.append(f"{label:<{width}}" + "".join(f"{c:>19}" for c in cells))
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def csv(self) -> str:
        rows = self.rows()
        header = list(rows[0]) if rows else ["group", "model", "k"]
        text = [",".join(header)]
        for row in rows:
            text.append(",".join(
                "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in row.values()))
        return "\n".join(text) + "\n"

    def to_json(self) -> str:
        """The rows, and every cluster's dE_1..dE_K (meV/atom) per group: ``per_cluster``
        [group][reference name or model label]."""
        per_cluster = {
            group: {self.reference_name: self.reference[group].tolist(),
                    **{label: self.models[label][group].tolist() for label in self.labels}}
            for group in self.groups
        }
        return json.dumps(
            {"reference": self.reference_name, "max_order": self.max_order, "cutoff": self.cutoff,
             "groups": self.groups, "models": self.labels, "rows": self.rows(), "per_cluster": per_cluster},
            indent=1,
        )

    def plot(self, path=None, *, learning: bool = False):
        """|mean dE_k| against k on a log scale, a line per model and a panel per group,
        open markers where the sign is wrong; or, with ``learning``, each order's
        percentage of the reference against the models in the order given (training
        stages). Saved to ``path`` (by its suffix) when given; returns the matplotlib
        ``Figure``. Object-oriented matplotlib only: no backend is selected, no pyplot
        state touched."""
        from matplotlib.figure import Figure

        groups = list(self.groups)
        fig = Figure(figsize=(4.6 * len(groups), 3.8))
        axes = fig.subplots(1, len(groups), squeeze=False)
        ks = np.arange(2, self.max_order + 1)
        for ax, group in zip(axes[0], groups):
            ref = self.reference[group].mean(axis=0)[1:]
            ref = np.where(np.abs(ref) < NEGLIGIBLE, np.nan, ref)  # zero: not drawn on a log axis
            if learning:
                x = np.arange(len(self.labels))
                for i, k in enumerate(ks):
                    values = [_percent(self.models[label][group].mean(axis=0)[k - 1], ref[i]) for label in self.labels]
                    if any(v is None for v in values):
                        continue  # a reference of zero: no percentage
                    ax.plot(x, values, "o-", label=f"dE_{k}")
                ax.axhline(100, color="k", lw=0.8)
                ax.set_xticks(x, self.labels, rotation=30, ha="right", fontsize=8)
                ax.set_ylabel(f"dE_k, % of {self.reference_name}")
            else:
                ax.semilogy(ks, np.abs(ref), "k-", lw=2, label=self.reference_name)
                for label in self.labels:
                    mine = self.models[label][group].mean(axis=0)[1:]
                    mine = np.where(np.abs(mine) < NEGLIGIBLE, np.nan, mine)
                    (line,) = ax.semilogy(ks, np.abs(mine), "-", label=label)
                    right = _sign(mine) == _sign(ref)
                    ax.plot(ks[right], np.abs(mine[right]), "o", color=line.get_color())
                    ax.plot(ks[~right], np.abs(mine[~right]), "o", mfc="white", color=line.get_color())
                ax.set_xticks(ks)
                ax.set_xlabel("body order k")
                ax.set_ylabel("|dE_k| (meV/atom)")
            ax.set_title(f"{group} ({self.groups[group]} clusters)")
        axes[0][0].legend(fontsize=8)
        if not learning:
            fig.text(0.01, 0.01, "open marker: sign opposite to the reference", fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=150)
        return fig


def compare_expansions(
    clusters: list[ase.Atoms],
    models,
    reference="shipped",
    *,
    max_order: int | None = None,
    cutoff: float | None = None,
    cache: Path | str | None | bool = True,
    labels: list[str] | None = None,
    counts: dict | None = None,
) -> Comparison:
    """The models' dE_k beside the reference's, grouped by ``info["density"]`` (clusters
    without it form the group "ungrouped").

    :param models: one model or a list (names, files, ASE calculators: anything
        :class:`~ase_bodyorder.BodyOrderCalculator` takes), in the order to show them
        (for training stages: training order)
    :param reference: ``"shipped"`` (the FCI energies of :func:`shipped_clusters`),
        ``"fci"`` (:class:`~ase_bodyorder.fci.FCICalculator`) or an ASE calculator
    :param max_order: K >= 2; clusters of different sizes need one, at most the
        smallest size (means over clusters are per order)
    :param labels: how to name the models (default: their names or file stems)
    :param counts: filled as in :func:`reference_expansions`
    """
    if not clusters:
        raise InputError("no clusters to compare")
    if isinstance(models, (str, os.PathLike)) or not isinstance(models, (list, tuple)):
        models = [models]
    labels = list(labels) if labels is not None else _labels(models)
    if len(labels) != len(models):
        raise InputError(f"{len(labels)} labels for {len(models)} models")
    if len(set(labels)) != len(labels):
        raise InputError(f"the models' labels must differ, got {labels}")
    sizes = sorted({len(atoms) for atoms in clusters})
    if max_order is not None and max_order < 2:
        raise InputError(f"the comparison shows orders k >= 2: max_order must be at least 2, got {max_order}")
    if max_order is None and len(sizes) > 1:
        raise InputError(
            f"the clusters have {sizes[0]} to {sizes[-1]} bodies: give max_order (at most {sizes[0]}), "
            "so that every order is averaged over every cluster"
        )
    K = sizes[0] if max_order is None else max_order
    if K > sizes[0]:
        raise InputError(f"max_order {K} is more than the smallest cluster's {sizes[0]} bodies")
    if K < 2:
        raise InputError(f"clusters of {sizes[0]} body have no order k >= 2 to compare")
    groups: dict[str, list[int]] = {}
    for i, atoms in enumerate(clusters):
        groups.setdefault(str(atoms.info.get("density", "ungrouped")), []).append(i)

    def per_atom_mev(values: list[np.ndarray]) -> list[np.ndarray]:
        return [1000 * v[:K] / len(atoms) for v, atoms in zip(values, clusters)]

    # the models first: they are fast, and a model that does not fit the clusters (its
    # species) is refused before a slow reference has run
    result = {label: per_atom_mev(model_expansions(clusters, model, max_order=K, cutoff=cutoff))
              for label, model in zip(labels, models)}
    reference = _reference(reference)
    ref = per_atom_mev(reference_expansions(clusters, reference, max_order=K, cutoff=cutoff, cache=cache,
                                            counts=counts))
    name = SHIPPED_METHOD if isinstance(reference, str) else getattr(reference, "method", type(reference).__name__)
    return Comparison(
        reference_name=name.split(" (")[0],
        groups={g: len(members) for g, members in groups.items()},
        reference={g: np.array([ref[i] for i in members]) for g, members in groups.items()},
        models={label: {g: np.array([values[i] for i in members]) for g, members in groups.items()}
                for label, values in result.items()},
        max_order=K,
        cutoff=cutoff,
        labels=labels,
    )


def _labels(models: list) -> list[str]:
    """Names or file stems; where two files share a stem (runs/a/model.pt and
    runs/b/model.pt), their folder too."""
    labels = [model_label(m, short=True) for m in models]
    for i, model in enumerate(models):
        if labels.count(labels[i]) > 1 and isinstance(model, (str, os.PathLike)) and Path(model).parent.name:
            labels[i] = f"{Path(model).parent.name}/{labels[i]}"
    return labels

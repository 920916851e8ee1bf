"""Fitting a linear body-ordered model: ridge regression on energies and forces.

The design matrix is never held whole. Structures are featurised in batches, and each
batch adds its rows to the quadratic forms of the least-squares problem (X^T X, X^T y,
y^T y) of its group: training or validation, and its species mix. Memory therefore
does not grow with the data, and every error (per group, for any regularisation) is
read from the quadratic forms afterwards.

Energy rows are per-atom energies; force rows are every force component. The loss is
mean((E - E_ref)/N)^2 + force_weight * mean(F - F_ref)^2 over the training structures,
plus regularisation * |w|^2 (the per-species constants, the isolated atoms' energies,
are not regularised).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BodyOrderWarning, InputError

__all__ = ["FitResult", "fit_linear_model", "read_training_data"]

#: regularisations tried when none is given, relative to the mean diagonal of X^T X
REGULARISATION_GRID = tuple(10.0 ** np.arange(-12, -1))


@dataclass
class _Forms:
    """Quadratic forms of one group's energy and force rows."""

    size: int
    structures: int = 0

    def __post_init__(self):
        # [X^T X, X^T y, y^T y, rows] of the energy rows and of the force rows
        self.energy = [np.zeros((self.size, self.size)), np.zeros(self.size), 0.0, 0]
        self.force = [np.zeros((self.size, self.size)), np.zeros(self.size), 0.0, 0]

    def add(self, which: str, rows: np.ndarray, targets: np.ndarray) -> None:
        forms = self.energy if which == "energy" else self.force
        forms[0] += rows.T @ rows
        forms[1] += rows.T @ targets
        forms[2] += float(targets @ targets)
        forms[3] += len(targets)

    def rmse(self, which: str, w: np.ndarray) -> float:
        A, b, c, n = self.energy if which == "energy" else self.force
        return float(np.sqrt(max(w @ A @ w - 2 * w @ b + c, 0.0) / n)) if n else float("nan")


@dataclass
class FitResult:
    """What a fit gives: the weights, the chosen regularisation and the errors."""

    max_order: int
    species: list[int]
    weights: list[np.ndarray]  # per order: (species, features)
    bias: np.ndarray  # per species (eV)
    regularisation: float
    errors: dict  # {"train"|"validation": {mix: {"energy_meV_per_atom", "force_eV_per_A", "structures"}}}
    seconds: float
    hypers: dict


def read_training_data(paths) -> list:
    """Every frame of every file, with its energy (and forces when present); refuses a
    frame without an energy, naming it."""
    import ase.io

    frames = []
    resolved = [Path(p).resolve() for p in paths]
    repeated = sorted({str(p) for p in resolved if resolved.count(p) > 1})
    if repeated:  # its structures would fall on both sides of the validation split
        warnings.warn(f"training data given more than once: {', '.join(repeated)}: its structures count twice "
                      "and the validation errors come out too low", BodyOrderWarning, stacklevel=3)
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"training data '{path}' does not exist")
        try:
            these = ase.io.read(path, ":")
        except Exception as error:
            raise InputError(f"cannot read training data '{path}': {type(error).__name__}: {error}") from None
        for index, atoms in enumerate(these):
            energy = _energy(atoms)
            if energy is None:
                raise InputError(f"frame {index} of '{path}' has no energy: the fit needs energies (forces optional)")
            atoms.info["_energy"] = energy
            atoms.info["_forces"] = _forces(atoms)
            frames.append(atoms)
    if not frames:
        raise InputError("no training structures")
    return frames


def _energy(atoms):
    try:
        return float(atoms.get_potential_energy())
    except Exception:
        value = atoms.info.get("energy")
        return None if value is None else float(value)


def _forces(atoms):
    try:
        return np.array(atoms.get_forces(), dtype=float)
    except Exception:
        return np.array(atoms.arrays["forces"], dtype=float) if "forces" in atoms.arrays else None


def _mix(atoms) -> str:
    """The species mix that errors are reported by: the sorted element symbols."""
    return "".join(sorted(set(atoms.get_chemical_symbols())))


class _Columns:
    """Where each (order, centre species) block of weights, and each species' constant,
    sits among the columns of the design matrix."""

    def __init__(self, n_features: list[int], species: list[int]):
        self.species = species
        self.n_features = n_features
        self.start = {}
        column = 0
        for order, count in enumerate(n_features):
            for z in species:
                self.start[order, z] = column
                column += count
        self.bias = {z: column + i for i, z in enumerate(species)}
        self.size = column + len(species)

    def split(self, w: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        weights = [np.array([w[self.start[o, z]: self.start[o, z] + n] for z in self.species])
                   for o, n in enumerate(self.n_features)]
        return weights, np.array([w[self.bias[z]] for z in self.species])


def _batch_rows(module, frames: list, columns: _Columns | None):
    """Energy rows (per structure, summed over atoms) and force rows (minus the
    gradient of those sums, 3 per atom) of a batch; the columns are made on the first
    batch (the features' sizes)."""
    from featomic.torch import systems_to_torch

    from .descriptors import block_rows

    with_forces = any(atoms.info["_forces"] is not None for atoms in frames)
    systems = systems_to_torch(frames, positions_requires_grad=with_forces)
    orders = module(systems, gradients=with_forces)
    if columns is None:
        columns = _Columns([int(block_rows(f)[0][1].shape[1]) for f in orders], module_species(module))
    sizes = [len(a) for a in frames]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    energy = np.zeros((len(frames), columns.size))
    force = np.zeros((3 * offsets[-1], columns.size))
    for order, features in enumerate(orders):
        native = order < 2  # featomic gives position gradients for nu <= 2
        for center, values, system, atom in block_rows(features):
            start = columns.start[order, center]
            span = slice(start, start + values.shape[1])
            np.add.at(energy[:, span], system.numpy(), values.detach().numpy())
        if not with_forces:  # energies alone: no gradients at all (much faster at K = 4)
            continue
        if native:
            _native_force_rows(features, columns, order, offsets, force)
        else:
            _autograd_force_rows(features, systems, columns, order, offsets, force)
    for i, atoms in enumerate(frames):
        for z, count in zip(*np.unique(atoms.numbers, return_counts=True)):
            energy[i, columns.bias[int(z)]] = count
    return energy, -force, columns


def _native_force_rows(features, columns: _Columns, order: int, offsets, force: np.ndarray) -> None:
    """d(sum of features)/d(positions) from featomic's own gradients."""
    for key, block in features.items():
        start = columns.start[order, int(key["center_type"])]
        gradient = block.gradient("positions")
        values = gradient.values.detach().numpy().reshape(gradient.values.shape[0], 3, -1)
        system = gradient.samples.column("system").numpy()
        atom = gradient.samples.column("atom").numpy()
        rows = 3 * (offsets[system] + atom)
        span = slice(start, start + values.shape[2])
        for direction in range(3):
            np.add.at(force[:, span], rows + direction, values[:, direction, :])


def _autograd_force_rows(features, systems, columns: _Columns, order: int, offsets, force: np.ndarray) -> None:
    """d(sum of features)/d(positions) by one backward pass per feature column: each
    gives that column's gradient for every structure of the batch at once."""
    import torch

    from .descriptors import block_rows

    positions = [s.positions for s in systems]
    for center, values, system, _ in block_rows(features):
        sums = torch.zeros(len(systems), values.shape[1], dtype=values.dtype).index_add(0, system.to(torch.int64), values)
        start = columns.start[order, center]
        for k in range(sums.shape[1]):
            grads = torch.autograd.grad(sums[:, k].sum(), positions, retain_graph=True, allow_unused=True)
            for s, g in enumerate(grads):
                if g is not None:
                    force[3 * offsets[s]: 3 * offsets[s + 1], start + k] += g.detach().numpy().reshape(-1)


def module_species(module) -> list[int]:
    """The atomic numbers a features module was made for."""
    return [int(z) for z in module.neighbor_types.values.reshape(-1).tolist()]


def fit_linear_model(
    data,
    max_order: int,
    output: str | os.PathLike | None = None,
    *,
    cutoff: float = 4.0,
    regularisation: float | None = None,
    force_weight: float = 0.01,
    validation_fraction: float = 0.1,
    batch_size: int = 500,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    name: str | None = None,
    forces: bool = True,
) -> FitResult:
    """Fit a linear model of body order ``max_order`` (2, 3 or 4) to ``data`` (files
    ASE reads, with energies; forces used where present) and, given ``output``, write
    it as a metatomic model with its card (``output`` with ``.json``).

    :param cutoff: the descriptors' radius (A), the model's locality radius
    :param regularisation: ridge strength relative to the mean diagonal of the
        normal equations; None: the one of :data:`REGULARISATION_GRID` with the lowest
        validation loss
    :param force_weight: weight of the mean squared force error ((eV/A)^2) against the
        mean squared per-atom energy error ((eV/atom)^2)
    :param validation_fraction: structures held out (at random, ``seed``) to choose
        the regularisation and report validation errors; the model is fitted on the rest
    :param batch_size: structures featurised at once (memory against time: at K = 4 each
        batch costs one backward pass per nu = 3 feature, so larger batches are faster)
    :param forces: fit the forces too, where the data has them (False: energies only,
        much faster at K = 4, whose force rows take one backward pass per feature)
    :raises InputError: before any work, for K outside 2..4, an existing ``output``
        without ``overwrite``, or data without energies
    """
    start = time.perf_counter()
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order not in (2, 3, 4):
        raise InputError(f"a linear model's body order K must be 2, 3 or 4, got {max_order!r}")
    if output is not None:
        output = Path(output)
        if output.exists() and not overwrite:
            raise InputError(f"'{output}' exists: pass overwrite=True to replace it")
        if not output.parent.is_dir():
            raise InputError(f"the folder '{output.parent}' of '{output}' does not exist")
    if not 0 <= validation_fraction < 1:
        raise InputError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if validation_fraction == 0 and regularisation is None:
        raise InputError("with no validation structures the regularisation cannot be chosen: give one")
    smoothing = 0.5  # the descriptors' cutoff smoothing width (A)
    if not (np.isfinite(cutoff) and cutoff > smoothing):
        raise InputError(f"cutoff must be a distance in A larger than the {smoothing} A smoothing width, got {cutoff}")
    if not (np.isfinite(force_weight) and force_weight >= 0):
        raise InputError(f"force_weight must be >= 0, got {force_weight}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    frames = read_training_data(paths)
    if not forces:
        for atoms in frames:
            atoms.info["_forces"] = None
    largest = max(len(atoms) if not atoms.pbc.any() else max_order for atoms in frames)
    if largest < max_order:
        # allowed (arXiv 2502.16125 fits K = 3 and 4 to dimers), but the user should know
        warnings.warn(
            f"K = {max_order} but no training structure has more than {largest} atoms: the terms of "
            f"{largest + 1} to {max_order} bodies are set by the ridge and the smaller clusters' "
            "self-correlations, not by data of that many bodies",
            BodyOrderWarning, stacklevel=2,
        )
    from .descriptors import BodyOrderedFeatures, default_hypers

    species = sorted({int(z) for atoms in frames for z in atoms.numbers})
    hypers = default_hypers(max_order, cutoff)
    module = BodyOrderedFeatures(max_order, species, hypers)
    rng = np.random.default_rng(seed)
    held_out = rng.random(len(frames)) < validation_fraction
    if validation_fraction > 0 and not held_out.any():  # small data: at least one
        held_out[rng.integers(len(frames))] = True
    forms, columns = _accumulate(module, frames, held_out, batch_size, progress)
    train = _total(forms, "train", columns.size)
    w, chosen = _solve(train, _total(forms, "validation", columns.size), columns, force_weight, regularisation)
    weights, bias = columns.split(w)
    errors = {split: {mix: {"structures": f.structures, "energy_meV_per_atom": 1000 * f.rmse("energy", w),
                            "force_eV_per_A": f.rmse("force", w)}
                      for (s, mix), f in sorted(forms.items()) if s == split}
              for split in ("train", "validation")}
    result = FitResult(max_order, species, weights, bias, chosen, errors, time.perf_counter() - start, hypers)
    if output is not None:
        _write(result, output, cutoff, paths, name or output.stem, force_weight, validation_fraction, seed)
    return result


def _accumulate(module, frames, held_out, batch_size: int, progress: bool):
    """The quadratic forms of every (split, species mix), batch after batch."""
    from tqdm.auto import tqdm

    forms: dict = {}
    columns = None
    bar = tqdm(total=len(frames), unit="structure", disable=not progress, file=sys.stderr)
    for first in range(0, len(frames), batch_size):
        batch = frames[first: first + batch_size]
        energy, force, columns = _batch_rows(module, batch, columns)
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in batch])])
        groups: dict = {}
        for i, atoms in enumerate(batch):
            key = ("validation" if held_out[first + i] else "train", _mix(atoms))
            groups.setdefault(key, []).append(i)
        for key, members in groups.items():
            group = forms.setdefault(key, _Forms(columns.size))
            group.structures += len(members)
            n = np.array([len(batch[i]) for i in members], dtype=float)
            group.add("energy", energy[members] / n[:, None], np.array([batch[i].info["_energy"] for i in members]) / n)
            with_forces = [i for i in members if batch[i].info["_forces"] is not None]
            if with_forces:
                rows = np.concatenate([force[3 * offsets[i]: 3 * offsets[i + 1]] for i in with_forces])
                targets = np.concatenate([batch[i].info["_forces"].reshape(-1) for i in with_forces])
                group.add("force", rows, targets)
        bar.update(len(batch))
    bar.close()
    return forms, columns


def _total(forms: dict, split: str, size: int) -> _Forms:
    total = _Forms(size)
    for (s, _), f in forms.items():
        if s == split:
            total.structures += f.structures
            for which in ("energy", "force"):
                mine, theirs = getattr(total, which), getattr(f, which)
                for i in range(4):
                    mine[i] = mine[i] + theirs[i]
    return total


def _normal_equations(forms: _Forms, force_weight: float):
    """A w = b of the mean squared errors (energies per atom, forces weighted)."""
    A_e, b_e, _, n_e = forms.energy
    A_f, b_f, _, n_f = forms.force
    A = A_e / max(n_e, 1) + (force_weight * A_f / n_f if n_f else 0.0)
    b = b_e / max(n_e, 1) + (force_weight * b_f / n_f if n_f else 0.0)
    return A, b


def _loss(forms: _Forms, w: np.ndarray, force_weight: float) -> float:
    energy = forms.rmse("energy", w) ** 2 if forms.energy[3] else 0.0
    force = forms.rmse("force", w) ** 2 if forms.force[3] else 0.0
    return energy + force_weight * force


def _solve(train: _Forms, validation: _Forms, columns: _Columns, force_weight: float, regularisation):
    """The weights and the regularisation used (the given one, or the grid's best on
    the validation structures; without them, on the training ones)."""
    import scipy.linalg

    A, b = _normal_equations(train, force_weight)
    penalised = np.ones(columns.size)
    penalised[list(columns.bias.values())] = 0.0  # the isolated atoms' energies are free
    scale = float(np.mean(np.diag(A)[penalised > 0])) or 1.0

    def solve(strength: float) -> np.ndarray:
        matrix = A + strength * scale * np.diag(penalised)
        with warnings.catch_warnings():  # the weakest regularisations are ill-conditioned:
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # validation judges them
            try:
                return scipy.linalg.solve(matrix, b, assume_a="pos")
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
                return scipy.linalg.lstsq(matrix, b)[0]

    if regularisation is not None:
        if not regularisation >= 0:
            raise InputError(f"regularisation must be >= 0, got {regularisation}")
        return solve(float(regularisation)), float(regularisation)
    judge = validation if validation.energy[3] else train
    scored = [(_loss(judge, w, force_weight), strength, w) for strength in REGULARISATION_GRID
              for w in [solve(strength)]]
    _, strength, w = min(scored, key=lambda item: item[0])
    return w, float(strength)


def _write(result: FitResult, output: Path, cutoff: float, paths, name: str, force_weight: float,
           validation_fraction: float, seed: int) -> None:
    import ase.data
    import torch

    from .. import __version__
    from .descriptors import BodyOrderedFeatures
    from .model import LinearBodyOrderModel, save_model

    module = LinearBodyOrderModel(
        BodyOrderedFeatures(result.max_order, result.species, result.hypers), result.species,
        [torch.from_numpy(w) for w in result.weights], torch.from_numpy(result.bias),
    )
    card = {
        "name": name,
        "architecture": f"linear, body order {result.max_order} (featomic density correlations nu <= "
                        f"{result.max_order - 1}, centre density excluded)",
        "max_order": result.max_order,
        "cutoff_A": cutoff,
        "species": [ase.data.chemical_symbols[z] for z in result.species],
        "hypers": result.hypers,
        "regularisation": result.regularisation,
        "force_weight": force_weight,
        "fitted_to": "energies and forces" if any(
            np.isfinite(row["force_eV_per_A"]) for row in result.errors["train"].values()) else "energies",
        "validation_fraction": validation_fraction,
        "seed": seed,
        "data": [{"file": str(p), "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()} for p in paths],
        "errors": result.errors,
        "fit_seconds": round(result.seconds, 2),
        "package_version": __version__,
        "dtype": "float64",
        "summary": f"linear K = {result.max_order}, cutoff {cutoff:g} A, fitted on {len(paths)} file(s)",
    }
    save_model(module, output, cutoff, card)

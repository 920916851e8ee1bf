"""Shared fixtures: reference potentials, random clusters, brute-force expansions."""

from __future__ import annotations

import itertools
import warnings

import ase
import numpy as np
import pytest

from ase_bodyorder.reference import (
    ReferencePotential,
    evaluate_periodic,
    export_reference_model,
)

warnings.filterwarnings("ignore", message=".*deprecated.*")

SPECIES = [1, 6, 8]
CUTOFF = 3.0


@pytest.fixture(scope="session")
def many_body_potential():
    """Every body order (EAM-like embedding) plus explicit terms, smooth cutoff."""
    return ReferencePotential(SPECIES, ["one", "pair", "triple", "embedding"], cutoff=CUTOFF)


@pytest.fixture(scope="session")
def explicit_potential():
    """Explicit 1-, 2- and 3-body terms only."""
    return ReferencePotential(SPECIES, ["one", "pair", "triple"], cutoff=CUTOFF)


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory, many_body_potential):
    """The many-body reference potential as TorchScript metatomic models."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, kwargs in {
        "full": {},
        "half": {"full_list": False},
        "no_per_atom": {"per_atom": False},
        "float32": {"dtype": "float32"},
    }.items():
        paths[name] = folder / f"reference-{name}.pt"
        export_reference_model(many_body_potential, paths[name], **kwargs)
    return paths


def random_cluster(n: int, density: float, seed: int, species=SPECIES, min_distance=0.7) -> ase.Atoms:
    """n atoms of mixed species uniform in a sphere of volume n/density."""
    rng = np.random.default_rng(seed)
    radius = (3 * n / (4 * np.pi * density)) ** (1 / 3)
    points = []
    while len(points) < n:
        p = rng.uniform(-radius, radius, 3)
        if p @ p <= radius**2 and all(np.linalg.norm(p - q) >= min_distance for q in points):
            points.append(p)
    return ase.Atoms(numbers=rng.choice(species, n), positions=np.array(points))


def subset_energies(potential, atoms: ase.Atoms, bodies: list[list[int]]):
    """Energy and forces of the isolated subcluster of every subset of bodies."""
    table = {}
    for k in range(1, len(bodies) + 1):
        for subset in itertools.combinations(range(len(bodies)), k):
            idx = [a for b in subset for a in bodies[b]]
            r = evaluate_periodic(potential, atoms[idx], True, False)
            table[subset] = (r["energy"], r["forces"], idx)
    return table


def strain_derivative(atoms: ase.Atoms, calculator, a: int, b: int, step: float = 1e-5) -> float:
    """The stress component (a, b) as a central finite difference of the energy under a
    symmetric strain, per volume (eV/A^3), with ``calculator`` on the strained copies."""
    energies = []
    for sign in (1, -1):
        strain = np.eye(3)
        strain[a, b] += sign * step / 2
        strain[b, a] += sign * step / 2
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        strained.calc = calculator
        energies.append(strained.get_potential_energy())
    return (energies[0] - energies[1]) / (2 * step) / atoms.get_volume()


def inclusion_exclusion(values: dict[tuple, object], order: int):
    """sum over subsets S with |S| <= order of eps(S), eps(S) = sum over T subset of S of
    (-1)^(|S|-|T|) values[T]: the definition, with no coefficient formula.

    ``values`` maps every subset (a sorted tuple) to a number or an array (energies, or
    forces laid out on the whole system): the combination is linear, so both work.
    """
    total = 0.0
    for subset in values:
        if len(subset) > order:
            continue
        for k in range(1, len(subset) + 1):
            for inner in itertools.combinations(subset, k):
                total = total + (-1) ** (len(subset) - k) * values[inner]
    return total


def brute_force(table, n_bodies: int, n_atoms: int, order: int):
    """E^(K) and its forces by inclusion-exclusion over ALL subsets of bodies (docs/design.md,
    The expansion), from :func:`subset_energies`' table."""
    energies = {subset: e for subset, (e, _, _) in table.items()}
    forces = {}
    for subset, (_, f, idx) in table.items():
        full = np.zeros((n_atoms, 3))
        full[idx] = f
        forces[subset] = full
    order = min(order, n_bodies)
    return inclusion_exclusion(energies, order), inclusion_exclusion(forces, order)


@pytest.fixture(scope="session")
def pet_model(tmp_path_factory):
    """A real PET model: the shipped default, else metatrain's test checkpoint
    exported offline."""
    from ase_bodyorder.models import list_models, default_model

    if list_models():
        return default_model()
    metatrain = pytest.importorskip("metatrain")
    import gzip
    import shutil
    import subprocess
    from pathlib import Path

    folder = tmp_path_factory.mktemp("pet")
    checkpoints = sorted((Path(metatrain.__file__).parent / "pet/tests/checkpoints").glob("model-v*.ckpt.gz"))
    source = checkpoints[-1]
    ckpt = folder / "pet.ckpt"
    with gzip.open(source) as f_in, open(ckpt, "wb") as f_out:
        shutil.copyfileobj(f_in, f_out)
    subprocess.run(["mtt", "export", str(ckpt), "-o", str(folder / "pet.pt")], check=True, cwd=folder)
    return folder / "pet.pt"


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib Figure saved during the test, in order: to check what is drawn
    (axes, labels, lines), not only that a file was written."""
    from matplotlib.figure import Figure

    figures = []
    save = Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def lines_by_label(axes) -> dict:
    """The labelled lines of matplotlib axes, by label."""
    return {line.get_label(): line for line in axes.get_lines() if not line.get_label().startswith("_")}

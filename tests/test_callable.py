"""A batched Python function as the model (BatchedCallableBackend): the same toy model,
once as a batched numpy function and once as an ASE calculator (one subcluster at a
time), gives the same expansion; what the function returns is checked."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

from ase_bodyorder import BatchedCallableBackend, BodyOrderCalculator, decompose
from ase_bodyorder.backends import make_backend
from ase_bodyorder.backends.callable import is_batched_function
from ase_bodyorder.errors import InputError

CUTOFF = 4.2


def _switch(r):
    """Cosine switch to zero at CUTOFF, and its derivative."""
    x = np.pi * r / CUTOFF
    return 0.5 * (1.0 + np.cos(x)), -0.5 * np.pi / CUTOFF * np.sin(x)


def toy_energies_forces(clusters: list[ase.Atoms]):
    """A toy embedded-atom model, local within CUTOFF, for many clusters at once: a
    Morse pair term plus -sqrt(1 + rho_i) of a density rho_i of neighbours, so that
    every body order contributes. Energies (M,) and forces (P, 3), all in numpy."""
    sizes = np.array([len(a) for a in clusters])
    positions = np.concatenate([a.positions for a in clusters]) if len(clusters) else np.zeros((0, 3))
    owner = np.repeat(np.arange(len(clusters)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pairs = [np.stack(np.triu_indices(n, 1)) + s for n, s in zip(sizes, starts) if n > 1]
    i, j = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), dtype=int)
    d = positions[j] - positions[i]
    r = np.linalg.norm(d, axis=1)
    keep = r < CUTOFF
    i, j, d, r = i[keep], j[keep], d[keep], r[keep]
    s, ds = _switch(r)
    e1, e2 = np.exp(-1.4 * (r - 2.4)), np.exp(-2.8 * (r - 2.4))
    phi, dphi = 2.0 * (e2 - 2 * e1) * s, 2.0 * (-2.8 * e2 + 2.8 * e1) * s + 2.0 * (e2 - 2 * e1) * ds
    g = np.exp(-0.9 * r)
    f, df = g * s, -0.9 * g * s + g * ds
    rho = np.zeros(len(positions))
    np.add.at(rho, i, f)
    np.add.at(rho, j, f)
    energies = np.zeros(len(clusters))
    np.add.at(energies, owner, -np.sqrt(1.0 + rho))
    np.add.at(energies, owner[i], phi)
    dembed = -0.5 / np.sqrt(1.0 + rho)
    de_dr = dphi + (dembed[i] + dembed[j]) * df
    pair_force = (de_dr / r)[:, None] * d  # on i; minus that on j
    forces = np.zeros_like(positions)
    np.add.at(forces, i, pair_force)
    np.add.at(forces, j, -pair_force)
    return energies, forces


def toy_forces_per_cluster(clusters):
    """The same model, its forces returned as a list of one (n_i, 3) array per cluster."""
    energies, forces = toy_energies_forces(clusters)
    return list(energies), np.split(forces, np.cumsum([len(a) for a in clusters])[:-1])


class ToyCalculator(Calculator):
    """The same toy model as an ASE calculator (isolated clusters only)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        assert not self.atoms.pbc.any()
        energies, forces = toy_energies_forces([self.atoms])
        self.results = {"energy": float(energies[0]), "forces": forces}


def _finite():
    rng = np.random.default_rng(5)
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    atoms = atoms[np.argsort(np.linalg.norm(atoms.positions - atoms.positions.mean(0), axis=1))][:7]
    atoms.pbc = False
    atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
    return atoms


def _periodic():
    atoms = bulk("Si", "diamond", a=5.431)  # two atoms per cell: many images per subcluster
    atoms.rattle(0.08, seed=3)
    return atoms


def _compare(atoms, order: int, function):
    results = []
    for model in (BatchedCallableBackend(function, CUTOFF), ToyCalculator()):
        calc = BodyOrderCalculator(model, order, cutoff=CUTOFF)
        a = atoms.copy()
        a.calc = calc
        props = ["energy", "forces"] + (["stress"] if a.pbc.all() else [])
        calc.calculate(a, props)
        results.append(dict(calc.results))
    packed, one_by_one = results
    assert np.max(np.abs(packed["truncated_energies"] - one_by_one["truncated_energies"])) < 1e-12
    assert np.max(np.abs(packed["forces"] - one_by_one["forces"])) < 1e-12
    if atoms.pbc.all():
        assert np.max(np.abs(packed["stress"] - one_by_one["stress"])) < 1e-12
    return packed


@pytest.mark.parametrize("order", [2, 3])
def test_finite_equals_the_ase_calculator_path(order):
    packed = _compare(_finite(), order, toy_energies_forces)
    if order == 3:  # the toy has every body order: dE_3 is not zero
        assert abs(packed["body_order_energies"][2]) > 1e-3


@pytest.mark.parametrize("order", [2, 3])
def test_periodic_equals_the_ase_calculator_path(order):
    _compare(_periodic(), order, toy_forces_per_cluster)


def test_the_toy_forces_are_its_gradient():
    """(A check of the test's toy.) Central differences of its energy."""
    atoms = _finite()
    _, forces = toy_energies_forces([atoms])
    h, numeric = 1e-5, np.zeros_like(forces)
    for a in range(len(atoms)):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, c] += h
            minus.positions[a, c] -= h
            numeric[a, c] = -(toy_energies_forces([plus])[0][0] - toy_energies_forces([minus])[0][0]) / (2 * h)
    assert np.max(np.abs(forces - numeric)) < 1e-7


def test_a_bare_function_is_a_model_with_the_calculators_cutoff():
    """Given bare, as an ASE calculator is, the function needs cutoff= on the
    calculator; wrapped, the backend's cutoff is the default."""
    atoms = _finite()
    bare = BodyOrderCalculator(toy_energies_forces, 2, cutoff=CUTOFF)
    wrapped = BodyOrderCalculator(BatchedCallableBackend(toy_energies_forces, CUTOFF), 2)
    assert wrapped.cutoff == CUTOFF
    assert abs(bare.get_potential_energy(atoms) - wrapped.get_potential_energy(atoms)) < 1e-12
    with pytest.raises(InputError, match="does not say how far it reaches"):
        BodyOrderCalculator(toy_energies_forces, 2)
    backend = BatchedCallableBackend(toy_energies_forces, CUTOFF)
    assert make_backend(backend) is backend
    assert bare.backend.describe()["model"] == "toy_energies_forces"


def test_what_is_taken_as_a_function():
    import torch

    assert is_batched_function(toy_energies_forces)
    assert not is_batched_function(torch.nn.Linear(2, 2))  # loaded models are callable too
    assert not is_batched_function(ToyCalculator)  # a class
    assert not is_batched_function(ToyCalculator())
    assert not is_batched_function("default")


def test_energies_only_refuses_forces_in_one_line():
    def energies_only(clusters):
        return toy_energies_forces(clusters)[0]

    atoms = _finite()
    backend = BatchedCallableBackend(energies_only, CUTOFF, forces=False, name="toy")
    expected = decompose(atoms, BatchedCallableBackend(toy_energies_forces, CUTOFF), 3, full_model=True)
    got = decompose(atoms, backend, 3, full_model=True)
    assert np.max(np.abs(got.truncated_energies - expected.truncated_energies)) < 1e-12
    assert abs(got.full_energy - expected.full_energy) < 1e-12
    atoms.calc = BodyOrderCalculator(backend, 2)
    with pytest.raises(InputError, match=r"toy gives energies only \(forces=False\)") as error:
        atoms.get_forces()
    assert "\n" not in str(error.value)
    # curves need no forces: an energies-only function has one, named as given
    from ase_bodyorder.analysis import dimer_curve

    curve = dimer_curve(backend, ("Si", "Si"), [2.0, 2.5, 3.0])
    reference = dimer_curve(BatchedCallableBackend(toy_energies_forces, CUTOFF), ("Si", "Si"), [2.0, 2.5, 3.0])
    assert curve.label == "toy" and curve.force is None
    assert np.max(np.abs(curve.energy - reference.energy)) < 1e-12 and reference.force is not None


def _bad(output):
    return lambda clusters: output(len(clusters), sum(len(a) for a in clusters))


@pytest.mark.parametrize("output, forces, message", [
    (lambda m, p: (np.zeros(m + 1), np.zeros((p, 3))), True, r"energies of shape \(\d+,\) for \d+ clusters"),
    (lambda m, p: (np.zeros((m, 1)), np.zeros((p, 3))), True, r"energies of shape \(\d+, 1\)"),
    (lambda m, p: (np.zeros(m), np.zeros((p, 2))), True, r"forces of shape \(\d+, 2\) for \d+ clusters"),
    (lambda m, p: (np.zeros(m), [np.zeros((1, 3))] * (m + 1)), True, r"of \d+ force arrays for \d+ clusters"),
    (lambda m, p: (np.zeros(m), [np.zeros((5, 3))] * m), True, r"forces of shape \(5, 3\) for cluster 0"),
    (lambda m, p: np.zeros(m), True, r"must return \(energies, forces\) with forces=True"),
    (lambda m, p: (np.full(m, np.nan), np.zeros((p, 3))), True, "non-finite energy"),
    (lambda m, p: (np.zeros(m), np.zeros((p, 3))), False, "with forces=False the function returns the energies alone"),
    (lambda m, p: ["a"] * m, False, "energies that are not numbers"),
    (lambda m, p: None, False, "returned None: expected one energy per cluster"),
    (lambda m, p: (np.zeros(m), np.vstack([np.zeros((p - 1, 3)), [[np.nan, 0, 0]]])), True,
     r"non-finite forces for cluster \d+ of \d+"),
])
def test_wrong_returns_are_refused_by_name(output, forces, message):
    atoms = _finite()
    calc = BodyOrderCalculator(BatchedCallableBackend(_bad(output), CUTOFF, forces=forces), 2, check_locality=False)
    with pytest.raises(InputError, match=message):
        calc.get_potential_energy(atoms)


def test_settings_are_checked():
    with pytest.raises(InputError, match="cutoff must be a positive number"):
        BatchedCallableBackend(toy_energies_forces, -1.0)
    with pytest.raises(InputError, match="dtype must be"):
        BatchedCallableBackend(toy_energies_forces, 4.0, dtype="float16")
    with pytest.raises(InputError, match="expected a function"):
        BatchedCallableBackend("toy", 4.0)
    calc = BodyOrderCalculator(BatchedCallableBackend(toy_energies_forces, CUTOFF), None)
    with pytest.raises(InputError, match="evaluates isolated clusters only"):
        calc.get_potential_energy(_periodic())
    finite = _finite()
    assert abs(calc.get_potential_energy(finite) - toy_energies_forces([finite])[0][0]) < 1e-12

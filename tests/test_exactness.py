"""E^(K), forces, stress and dE_k against brute force and potentials of known order."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from conftest import CUTOFF, SPECIES, brute_force, random_cluster, strain_derivative, subset_energies

from ase_bodyorder import BodyOrderCalculator, decompose
from ase_bodyorder.reference import ReferenceBackend, ReferencePotential, evaluate_periodic


def _calc(potential, order, **kwargs):
    return BodyOrderCalculator(ReferenceBackend(potential), order, **kwargs)


@pytest.mark.parametrize(
    "n, density, seed", [(7, 0.08, 1), (8, 0.08, 2), (9, 0.03, 3), (8, 0.03, 4)]
)
def test_brute_force_all_subsets(many_body_potential, n, density, seed):
    """Must-show 1: every-order potential, cutoff on, K = 1..4, against ALL subsets."""
    atoms = random_cluster(n, density, seed)
    table = subset_energies(many_body_potential, atoms, [[a] for a in range(n)])
    previous = 0.0
    for order in range(1, 5):
        reference_energy, reference_forces = brute_force(table, n, n, order)
        atoms.calc = _calc(many_body_potential, order)
        energy = atoms.get_potential_energy()
        assert abs(energy - reference_energy) < 1e-8
        assert np.abs(atoms.get_forces() - reference_forces).max() < 1e-8
        contributions = atoms.calc.results["body_order_energies"]
        assert abs(contributions[-1] - (reference_energy - previous)) < 1e-8
        assert abs(contributions.sum() - energy) < 1e-9
        assert abs(atoms.calc.results["energies"].sum() - energy) < 1e-9
        previous = reference_energy
    # the cutoff really prunes something at the low density (else the test is weak)
    counts = atoms.calc.results["subcluster_counts"]
    assert counts[1] < n * (n - 1) // 2 or density > 0.05


def test_known_body_order(explicit_potential):
    """Must-show 2: 1+2+3-body potential: dE_k are its term sums, zero beyond 3."""
    atoms = random_cluster(9, 0.08, 11)
    by_term = {
        term: evaluate_periodic(ReferencePotential(SPECIES, [term], cutoff=CUTOFF), atoms, False, False)["energy"]
        for term in ("one", "pair", "triple")
    }
    result = decompose(atoms, ReferenceBackend(explicit_potential), 6, full_model=True)
    dE = result.body_order_energies
    assert abs(dE[0] - by_term["one"]) < 1e-10
    assert abs(dE[1] - by_term["pair"]) < 1e-10
    assert abs(dE[2] - by_term["triple"]) < 1e-10
    assert np.abs(dE[3:]).max() < 1e-10
    assert abs(result.remainder) < 1e-10


def test_full_order_gives_the_plain_model(many_body_potential):
    """K at least the largest connected component reproduces the plain model."""
    atoms = random_cluster(8, 0.02, 5)
    plain = evaluate_periodic(many_body_potential, atoms, True, False)
    atoms.calc = _calc(many_body_potential, 8)
    assert abs(atoms.get_potential_energy() - plain["energy"]) < 1e-9
    assert np.abs(atoms.get_forces() - plain["forces"]).max() < 1e-9
    # the largest component is smaller than 8: find it and check K = its size suffices
    graph_sizes = atoms.calc.results["subcluster_counts"]
    largest = int(np.max(np.nonzero(graph_sizes)[0])) + 1
    assert largest < 8
    atoms.calc = _calc(many_body_potential, largest)
    assert abs(atoms.get_potential_energy() - plain["energy"]) < 1e-9


def _small_cell(seed=0):
    rng = np.random.default_rng(seed)
    cell = np.array([[2.6, 0.1, 0.0], [0.2, 2.8, 0.1], [0.0, 0.3, 2.7]])  # < 2 * cutoff
    return ase.Atoms(numbers=[1, 6, 8], positions=rng.uniform(0, 2.5, (3, 3)), cell=cell, pbc=True)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_periodic_explicit_terms(explicit_potential, order):
    """Must-show 3: periodic E^(K), forces, stress equal the terms up to order K."""
    atoms = _small_cell()
    terms = ["one", "pair", "triple"][:order]
    expected = evaluate_periodic(ReferencePotential(SPECIES, terms, cutoff=CUTOFF), atoms, True, True)
    atoms.calc = _calc(explicit_potential, order)
    assert abs(atoms.get_potential_energy() - expected["energy"]) < 1e-9
    assert np.abs(atoms.get_forces() - expected["forces"]).max() < 1e-9
    assert np.abs(atoms.get_stress(voigt=False) - expected["stress"]).max() < 1e-9


@pytest.mark.parametrize("order", [2, 3])
def test_supercell_and_self_images(many_body_potential, order):
    """An atom meets its own images; the 2x2x2 supercell has 8x the energy."""
    atoms = _small_cell(1)
    atoms.calc = _calc(many_body_potential, order)
    energy = atoms.get_potential_energy()
    supercell = atoms.repeat(2)
    supercell.calc = _calc(many_body_potential, order)
    assert abs(supercell.get_potential_energy() - 8 * energy) < 1e-9 * abs(energy) * 8
    assert np.abs(supercell.get_forces() - np.tile(atoms.get_forces(), (8, 1))).max() < 1e-9
    assert np.abs(supercell.get_stress() - atoms.get_stress()).max() < 1e-9


def test_stress_is_a_finite_strain_derivative(many_body_potential):
    atoms = _small_cell(2)
    atoms.calc = _calc(many_body_potential, 3)
    stress = atoms.get_stress(voigt=False)
    for a, b in [(0, 0), (1, 1), (0, 1), (1, 2)]:
        assert abs(strain_derivative(atoms, _calc(many_body_potential, 3), a, b) - stress[a, b]) < 1e-6


@pytest.mark.parametrize("order", [2, 3, 4])
def test_forces_are_finite_differences(many_body_potential, order):
    """Must-show 4: forces equal central differences of E^(K)."""
    atoms = random_cluster(7, 0.06, 21)
    calc = _calc(many_body_potential, order)
    atoms.calc = calc
    forces = atoms.get_forces()
    h = 1e-5
    numeric = np.zeros_like(forces)
    for i in range(len(atoms)):
        for x in range(3):
            energies = []
            for sign in (1, -1):
                displaced = atoms.copy()
                displaced.positions[i, x] += sign * h
                displaced.calc = calc
                energies.append(displaced.get_potential_energy())
            numeric[i, x] = -(energies[0] - energies[1]) / (2 * h)
    assert np.abs(forces - numeric).max() < 1e-6


def test_translation_rotation_permutation(many_body_potential):
    atoms = random_cluster(8, 0.06, 31)
    atoms.calc = _calc(many_body_potential, 3)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    per_atom = atoms.calc.results["per_atom_body_order_energies"].copy()

    moved = atoms.copy()
    moved.positions += [3.1, -7.0, 0.4]
    moved.calc = _calc(many_body_potential, 3)
    assert abs(moved.get_potential_energy() - energy) < 1e-9
    assert np.abs(moved.get_forces() - forces).max() < 1e-9

    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T
    rotated.calc = _calc(many_body_potential, 3)
    assert abs(rotated.get_potential_energy() - energy) < 1e-9
    assert np.abs(rotated.get_forces() - forces @ rotation.T).max() < 1e-9

    order = np.random.default_rng(1).permutation(len(atoms))
    permuted = atoms[order]
    permuted.calc = _calc(many_body_potential, 3)
    assert abs(permuted.get_potential_energy() - energy) < 1e-9
    assert np.abs(permuted.get_forces() - forces[order]).max() < 1e-9
    assert np.abs(permuted.calc.results["per_atom_body_order_energies"] - per_atom[order]).max() < 1e-9


def _molecules(seed=0):
    """Six small molecules (2-3 atoms, mixed species) in a loose cluster."""
    rng = np.random.default_rng(seed)
    numbers, positions, fragments = [], [], []
    centres = [random_cluster(6, 0.01, seed, min_distance=2.5).positions]
    for m, centre in enumerate(centres[0]):
        size = 2 + m % 2
        start = len(numbers)
        for a in range(size):
            numbers.append(int(rng.choice(SPECIES)))
            positions.append(centre + rng.normal(0, 0.6, 3))
        fragments.append(list(range(start, start + size)))
    # interleave atom order so fragments are not contiguous ranges
    order = rng.permutation(len(numbers))
    inverse = np.argsort(order)
    atoms = ase.Atoms(numbers=np.array(numbers)[order], positions=np.array(positions)[order])
    return atoms, [sorted(inverse[f].tolist()) for f in fragments]


def test_fragments_against_brute_force(many_body_potential):
    """Must-show 5: molecules as bodies agree with brute force over fragment subsets."""
    atoms, fragments = _molecules(3)
    table = subset_energies(many_body_potential, atoms, fragments)
    for order in (1, 2, 3):
        expected_energy, expected_forces = brute_force(table, len(fragments), len(atoms), order)
        atoms.calc = _calc(many_body_potential, order, fragments=fragments)
        assert abs(atoms.get_potential_energy() - expected_energy) < 1e-8
        assert np.abs(atoms.get_forces() - expected_forces).max() < 1e-8
        assert abs(atoms.calc.results["energies"].sum() - expected_energy) < 1e-9


def test_periodic_fragments_wrapped_across_the_cell(many_body_potential):
    """A molecule split by the cell boundary is made whole; supercell gives 8x."""
    cell = np.diag([5.0, 5.2, 4.9])
    atoms = ase.Atoms(
        numbers=[8, 1, 1, 6, 8],
        positions=[[0.1, 1.0, 1.0], [4.4, 1.1, 1.3], [0.5, 1.8, 0.6], [2.5, 3.5, 3.0], [3.6, 3.6, 3.4]],
        cell=cell,
        pbc=True,
    )
    fragments = [[0, 1, 2], [3, 4]]
    unwrapped = atoms.copy()
    unwrapped.positions[1, 0] -= 5.0  # the same crystal, molecule drawn whole
    for order in (1, 2, 3):
        atoms.calc = _calc(many_body_potential, order, fragments=fragments)
        unwrapped.calc = _calc(many_body_potential, order, fragments=fragments)
        energy = atoms.get_potential_energy()
        assert abs(unwrapped.get_potential_energy() - energy) < 1e-9
        supercell = unwrapped.repeat(2)  # copies of whole molecules...
        supercell.wrap()  # ...split again by the supercell's boundary
        supercell_fragments = [[a + 5 * copy for a in f] for copy in range(8) for f in fragments]
        supercell.calc = _calc(many_body_potential, order, fragments=supercell_fragments)
        assert abs(supercell.get_potential_energy() - 8 * energy) < 1e-8
        assert np.abs(supercell.get_stress() - atoms.get_stress()).max() < 1e-9

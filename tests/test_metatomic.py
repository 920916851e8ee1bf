"""The packed metatomic path against exact answers and against metatomic itself."""

from __future__ import annotations

import itertools

import ase
import numpy as np
import pytest
from conftest import inclusion_exclusion, random_cluster

from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.reference import ReferenceBackend, evaluate_periodic


@pytest.mark.parametrize("variant", ["full", "half", "no_per_atom", "float32"])
@pytest.mark.parametrize("order", [2, 3])
def test_exported_reference_models(exported_models, many_body_potential, variant, order):
    """TorchScript models of the reference potential give the exact answers."""
    atoms = random_cluster(9, 0.06, 7)
    atoms.calc = BodyOrderCalculator(exported_models[variant], order)
    exact = atoms.copy()
    exact.calc = BodyOrderCalculator(ReferenceBackend(many_body_potential), order)
    tolerance = 1e-4 if variant == "float32" else 1e-10
    assert atoms.calc.backend.packed == (variant != "no_per_atom")
    assert abs(atoms.get_potential_energy() - exact.get_potential_energy()) < tolerance
    assert np.abs(atoms.get_forces() - exact.get_forces()).max() < tolerance
    assert np.allclose(
        atoms.calc.results["body_order_energies"], exact.calc.results["body_order_energies"], atol=tolerance
    )


def test_exported_model_periodic_and_plain(exported_models, many_body_potential):
    rng = np.random.default_rng(4)
    atoms = ase.Atoms(
        numbers=[1, 6, 8, 1],
        positions=rng.uniform(0, 3, (4, 3)),
        cell=[[3.1, 0, 0], [0.3, 3.3, 0], [0.1, 0.2, 3.0]],
        pbc=True,
    )
    for order in (2, 3):
        atoms.calc = BodyOrderCalculator(exported_models["full"], order)
        exact = atoms.copy()
        exact.calc = BodyOrderCalculator(ReferenceBackend(many_body_potential), order)
        assert abs(atoms.get_potential_energy() - exact.get_potential_energy()) < 1e-10
        assert np.abs(atoms.get_stress() - exact.get_stress()).max() < 1e-10
    # the plain model goes through metatomic's own calculator
    atoms.calc = BodyOrderCalculator(exported_models["full"], None)
    plain = evaluate_periodic(many_body_potential, atoms, True, True)
    assert abs(atoms.get_potential_energy() - plain["energy"]) < 1e-10
    assert np.abs(atoms.get_forces() - plain["forces"]).max() < 1e-10
    assert np.abs(atoms.get_stress(voigt=False) - plain["stress"]).max() < 1e-10
    assert np.abs(atoms.get_potential_energies() - plain["energies"]).max() < 1e-10


def test_chunking_and_skin_do_not_change_results(exported_models):
    atoms = random_cluster(10, 0.08, 8)
    reference = BodyOrderCalculator(exported_models["full"], 3)
    chunked = BodyOrderCalculator(exported_models["full"], 3, max_atoms_per_chunk=7)
    skinned = BodyOrderCalculator(exported_models["full"], 3, skin=0.5)
    rng = np.random.default_rng(0)
    for step in range(4):
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        results = []
        for calc in (reference, chunked, skinned):
            copy = atoms.copy()
            copy.calc = calc
            results.append((copy.get_potential_energy(), copy.get_forces()))
        for energy, forces in results[1:]:
            assert abs(energy - results[0][0]) < 1e-10
            assert np.abs(forces - results[0][1]).max() < 1e-10
    # the skin really reused the enumeration (more subsets than needed, same answer)
    assert skinned.results["subcluster_counts"][1] >= reference.results["subcluster_counts"][1]


def test_real_pet_against_one_subcluster_at_a_time(pet_model):
    """A real architecture: packed evaluation equals metatomic's own calculator
    called on every subset separately, combined by brute force."""
    from metatomic_ase import MetatomicCalculator

    n = 6
    atoms = random_cluster(n, 0.06, 12, species=[1])
    single = MetatomicCalculator(str(pet_model))
    table = {}
    for k in range(1, n + 1):
        for subset in itertools.combinations(range(n), k):
            r = single.compute_energy(atoms[list(subset)], compute_forces_and_stresses=True)
            table[subset] = (float(r["energy"]), np.asarray(r["forces"]))
    calc = BodyOrderCalculator(str(pet_model), None)
    tolerance = 1e-8 if calc.backend.dtype == "float64" else 2e-4
    energies = {subset: e for subset, (e, _) in table.items()}
    laid_out = {}
    for subset, (_, f) in table.items():
        laid_out[subset] = np.zeros((n, 3))
        laid_out[subset][list(subset)] = f
    for order in (1, 2, 3, 4):
        energy, forces = inclusion_exclusion(energies, order), inclusion_exclusion(laid_out, order)
        atoms.calc = BodyOrderCalculator(str(pet_model), order)
        assert abs(atoms.get_potential_energy() - energy) < tolerance * max(1, n)
        assert np.abs(atoms.get_forces() - forces).max() < tolerance * 10


def test_compute_many_equals_separate_calculations(exported_models):
    """Several structures (beads) evaluated in one packed batch give each one's results."""
    beads = [random_cluster(7, 0.06, 40 + b) for b in range(4)]
    calc = BodyOrderCalculator(exported_models["full"], 3, max_atoms_per_chunk=50)
    together = calc.compute_many(beads, forces=True)
    for atoms, result in zip(beads, together):
        atoms.calc = BodyOrderCalculator(exported_models["full"], 3)
        assert abs(atoms.get_potential_energy() - result["energy"]) < 1e-10
        assert np.abs(atoms.get_forces() - result["forces"]).max() < 1e-10
        assert np.allclose(atoms.calc.results["body_order_energies"], result["body_order_energies"], atol=1e-10)

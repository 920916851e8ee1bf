"""Bad input: a clear error that names the problem, before anything is evaluated."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from conftest import random_cluster

from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.checks import LocalityError
from ase_bodyorder.expansion import ExpansionTooLargeError
from ase_bodyorder.reference import ReferenceBackend


class CountingBackend(ReferenceBackend):
    """The reference backend, counting model evaluations."""

    def __init__(self, potential):
        super().__init__(potential)
        self.calls = 0

    def evaluate(self, batch, forces):
        self.calls += 1
        return super().evaluate(batch, forces)


class ScreenedCoulomb(Calculator):
    """A non-local model: charges +-1 alternating, 1/r Coulomb, no cutoff."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        q = np.where(np.arange(len(self.atoms)) % 2 == 0, 1.0, -1.0) * 0.3
        d = self.atoms.positions[:, None] - self.atoms.positions[None]
        r = np.linalg.norm(d, axis=-1) + np.eye(len(self.atoms))
        pair = q[:, None] * q[None] / r * (1 - np.eye(len(self.atoms)))
        self.results["energy"] = 0.5 * pair.sum()
        self.results["forces"] = ((pair / r**2)[..., None] * d).sum(axis=1)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_max_order_must_be_a_positive_integer(many_body_potential, bad):
    with pytest.raises((ValueError, TypeError), match="max_order"):
        BodyOrderCalculator(ReferenceBackend(many_body_potential), bad)


def test_unknown_species(exported_models):
    atoms = random_cluster(4, 0.05, 0)
    atoms.numbers[2] = 26
    atoms.calc = BodyOrderCalculator(exported_models["full"], 2)
    with pytest.raises(ValueError, match=r"Fe.*not known to the model"):
        atoms.get_potential_energy()


def test_unknown_species_evaluates_nothing(many_body_potential):
    backend = CountingBackend(many_body_potential)
    atoms = random_cluster(4, 0.05, 0)
    atoms.numbers[0] = 79
    atoms.calc = BodyOrderCalculator(backend, 2)
    with pytest.raises(ValueError, match="79"):
        atoms.get_forces()
    assert backend.calls == 0


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_positions(many_body_potential, value):
    backend = CountingBackend(many_body_potential)
    atoms = random_cluster(4, 0.05, 0)
    atoms.positions[1, 2] = value
    atoms.calc = BodyOrderCalculator(backend, 2)
    with pytest.raises(ValueError, match=r"atoms \[1\] are not finite"):
        atoms.get_potential_energy()
    assert backend.calls == 0


@pytest.mark.parametrize(
    "fragments, message",
    [
        ([[0, 1], [1, 2], [3]], "atom 1 is in fragment 0 and in fragment 1"),
        ([[0, 1], [2]], r"leave out atoms \[3\]"),
        ([[0, 1], [2, 3, 9]], "outside"),
        ([[0, 1], [], [2, 3]], "empty"),
    ],
)
def test_bad_fragments(many_body_potential, fragments, message):
    backend = CountingBackend(many_body_potential)
    atoms = random_cluster(4, 0.05, 0)
    atoms.calc = BodyOrderCalculator(backend, 2, fragments=fragments)
    with pytest.raises(ValueError, match=message):
        atoms.get_potential_energy()
    assert backend.calls == 0


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BodyOrderCalculator(tmp_path / "nowhere.pt", 2)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a torch archive" * 10)
    with pytest.raises(ValueError, match="could not load a metatomic model"):
        BodyOrderCalculator(corrupt, 2)
    with pytest.raises(IsADirectoryError):
        BodyOrderCalculator(tmp_path, 2)


def test_cutoff_too_small_is_detected(exported_models):
    atoms = random_cluster(5, 0.05, 0)
    atoms.calc = BodyOrderCalculator(exported_models["full"], 2, cutoff=2.0)
    with pytest.raises(LocalityError, match="not local within cutoff=2"):
        atoms.get_potential_energy()


def test_ase_calculator_cutoff_too_small_and_non_local():
    atoms = ase.Atoms("Ar4", positions=np.random.default_rng(0).uniform(0, 6, (4, 3)))
    # ASE's Lennard-Jones reaches rc = 6 A; a cutoff of 3 A is too small
    atoms.calc = BodyOrderCalculator(LennardJones(sigma=2.0, rc=6.0, smooth=True), 2, cutoff=3.0)
    with pytest.raises(LocalityError, match="interact"):
        atoms.get_potential_energy()
    atoms.calc = BodyOrderCalculator(ScreenedCoulomb(), 2, cutoff=5.0)
    with pytest.raises(LocalityError):
        atoms.get_potential_energy()
    # told the truth (every subset), the same non-local model is exact
    atoms.calc = BodyOrderCalculator(ScreenedCoulomb(), 4, cutoff=None)
    exact = atoms.copy()
    exact.calc = ScreenedCoulomb()
    assert abs(atoms.get_potential_energy() - exact.get_potential_energy()) < 1e-12


def test_ase_calculator_needs_a_cutoff():
    with pytest.raises(ValueError, match="give cutoff="):
        BodyOrderCalculator(LennardJones(), 2)


def test_expansion_larger_than_the_limit(many_body_potential):
    backend = CountingBackend(many_body_potential)
    atoms = random_cluster(12, 0.1, 0)
    atoms.calc = BodyOrderCalculator(backend, 3, max_subclusters=40, check_locality=False)
    with pytest.raises(ExpansionTooLargeError, match=r"more than 40 subclusters \(sizes 1\.\.\d: \[12, \d+"):
        atoms.get_potential_energy()
    assert backend.calls == 0


def test_stress_needs_a_periodic_cell(many_body_potential):
    from ase.calculators.calculator import PropertyNotImplementedError

    atoms = random_cluster(4, 0.05, 0)
    atoms.calc = BodyOrderCalculator(ReferenceBackend(many_body_potential), 2)
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_every_subset_is_refused_for_periodic_cells(many_body_potential):
    atoms = ase.Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=np.eye(3) * 4, pbc=True)
    atoms.calc = BodyOrderCalculator(ReferenceBackend(many_body_potential), 2, cutoff=None)
    with pytest.raises(ValueError, match="only defined for finite systems"):
        atoms.get_potential_energy()


def test_expansion_larger_than_memory_is_refused_before_evaluation(many_body_potential, monkeypatch):
    """Refused while planning, with the counts and the memory it would take, before the
    model sees a single subcluster."""
    import ase_bodyorder.expansion as expansion

    evaluated = []

    class Counting(ReferenceBackend):
        def evaluate(self, batch, forces):
            evaluated.append(batch.n_clusters)
            return super().evaluate(batch, forces)

    atoms = random_cluster(12, 0.1, 3)
    needed = expansion.expansion_memory([12, 30, 80])
    assert needed > 0
    monkeypatch.setattr(expansion, "available_memory", lambda: 2000)  # bytes
    atoms.calc = BodyOrderCalculator(Counting(many_body_potential), 3, check_locality=False)
    with pytest.raises(ExpansionTooLargeError, match=r"subclusters so far \(sizes 1..2: \[12, \d+\]\) and about .* GiB"):
        atoms.get_potential_energy()
    assert evaluated == []

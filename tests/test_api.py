"""The public surface: plan/evaluate/assemble against brute force, ASE calculator
conventions (set, todict, attributes), any ASE calculator as the model, light imports."""

from __future__ import annotations

import subprocess
import sys

import ase
import numpy as np
import pytest
from ase.calculators.lj import LennardJones
from ase.calculators.mixing import SumCalculator
from conftest import CUTOFF, brute_force, random_cluster, subset_energies

from ase_bodyorder import BodyOrderCalculator, assemble, evaluate_subclusters, plan_subclusters
from ase_bodyorder.reference import ReferenceBackend, ReferenceCalculator


# ----------------------------------------------------------------------------------
# plan / evaluate / assemble with energies from elsewhere


@pytest.mark.parametrize("cutoff", [None, CUTOFF])
def test_assemble_energies_from_an_ase_calculator_against_brute_force(many_body_potential, cutoff):
    """A user's own energies (here: an ASE calculator called on each isolated
    subcluster) go through plan_subclusters and assemble; the result is the
    inclusion-exclusion over all subsets, at every order, with forces."""
    n = 7
    atoms = random_cluster(n, 0.05, 21)
    table = subset_energies(many_body_potential, atoms, [[a] for a in range(n)])
    calculator = ReferenceCalculator(many_body_potential)
    subclusters = plan_subclusters(atoms, 4, cutoff)
    energies, forces = [], []
    for cluster in subclusters:
        cluster.calc = calculator
        energies.append(cluster.get_potential_energy())
        forces.append(cluster.get_forces())
    previous = 0.0
    for order in (1, 2, 3, 4):
        result = assemble(subclusters, energies, forces, max_order=order)
        energy, reference_forces = brute_force(table, n, n, order)
        assert abs(result["energy"] - energy) < 1e-9
        assert np.abs(result["forces"] - reference_forces).max() < 1e-9
        assert abs(result["body_order_energies"][-1] - (energy - previous)) < 1e-9
        assert abs(result["energies"].sum() - energy) < 1e-9
        previous = energy
    if cutoff is not None:  # the cutoff really leaves subsets out
        assert len(subclusters) < sum(len(s) for s in plan_subclusters(atoms, 4, None).plan.subsets)


def test_evaluate_subclusters_with_per_species_one_body(many_body_potential):
    """The calculator's own path (one-body energies per species) through the public
    steps gives the calculator's results."""
    atoms = random_cluster(8, 0.06, 5)
    subclusters = plan_subclusters(atoms, 3, CUTOFF, one_body_per_species=True)
    assert subclusters.order.min() == 2
    backend = ReferenceBackend(many_body_potential)
    result = assemble(subclusters, **evaluate_subclusters(subclusters, backend))
    atoms.calc = BodyOrderCalculator(backend, 3)
    assert abs(result["energy"] - atoms.get_potential_energy()) < 1e-10
    assert np.abs(result["forces"] - atoms.get_forces()).max() < 1e-10
    with pytest.raises(ValueError, match="one_body_energies"):
        assemble(subclusters, np.zeros(len(subclusters)))


def test_assemble_rejects_mismatched_input(many_body_potential):
    atoms = random_cluster(5, 0.06, 6)
    subclusters = plan_subclusters(atoms, 2, CUTOFF)
    with pytest.raises(ValueError, match="energies for"):
        assemble(subclusters, [0.0])
    with pytest.raises(ValueError, match="max_order must be between"):
        assemble(subclusters, np.zeros(len(subclusters)), max_order=3)


# ----------------------------------------------------------------------------------
# ASE conventions


def test_set_changes_the_order_and_discards_stale_results(many_body_potential):
    atoms = random_cluster(8, 0.06, 7)
    backend = ReferenceBackend(many_body_potential)
    fresh = {}
    for order in (2, 3):
        atoms.calc = BodyOrderCalculator(backend, order)
        fresh[order] = atoms.get_potential_energy()
    assert abs(fresh[2] - fresh[3]) > 1e-6  # the orders differ, so the test can fail

    for skin in (0.0, 0.5):  # with a skin the enumeration is cached: it must go too
        calc = BodyOrderCalculator(backend, 3, skin=skin)
        atoms.calc = calc
        assert abs(atoms.get_potential_energy() - fresh[3]) < 1e-10
        assert calc.set(max_order=2) == {"max_order": 2}
        assert abs(atoms.get_potential_energy() - fresh[2]) < 1e-10
        assert len(calc.results["body_order_energies"]) == 2
        calc.max_order = 3  # a plain attribute goes through set()
        assert calc.parameters["max_order"] == 3
        assert abs(atoms.get_potential_energy() - fresh[3]) < 1e-10
        assert calc.set(max_order=3) == {}  # no change, results kept
        assert "energy" in calc.results


def test_todict_and_parameters(exported_models):
    calc = BodyOrderCalculator(exported_models["full"], 3, skin=0.25)
    assert calc.todict() == {"model": str(exported_models["full"]), "max_order": 3, "skin": 0.25}
    assert calc.parameters["cutoff"] == "model" and calc.cutoff == calc.backend.default_cutoff
    calc.set(cutoff=4.5, fragments=[[0, 1], [2]])
    assert calc.todict()["cutoff"] == 4.5 and calc.fragments == [[0, 1], [2]]
    full = calc.todict(skip_default=False)
    assert set(full) >= set(BodyOrderCalculator.default_parameters)
    with pytest.raises(TypeError, match="unknown setting"):
        calc.set(max_oder=2)
    with pytest.raises(ValueError, match="new BodyOrderCalculator"):
        calc.set(model="other.pt")
    with pytest.raises(ValueError, match="max_order must be >= 1"):
        calc.max_order = 0
    assert calc.max_order == 3  # a refused setting changes nothing


def test_variant_is_passed_to_metatomic(exported_models):
    with pytest.raises(ValueError, match="variant"):
        BodyOrderCalculator(exported_models["full"], 2, variant="no-such-variant")


def test_any_ase_base_calculator_is_a_model():
    """SumCalculator is a BaseCalculator, not a Calculator: it is accepted, and the
    expansion of a sum of pair potentials stops at order 2."""
    atoms = ase.Atoms("Ar5", positions=np.random.default_rng(3).uniform(0, 5, (5, 3)))
    pair = SumCalculator([LennardJones(rc=4.0, smooth=True), LennardJones(sigma=1.5, rc=4.0, smooth=True)])
    atoms.calc = BodyOrderCalculator(pair, 3, cutoff=4.0)
    energy = atoms.get_potential_energy()
    reference = atoms.copy()
    reference.calc = pair
    assert abs(energy - reference.get_potential_energy()) < 1e-10
    assert abs(atoms.calc.results["body_order_energies"][2]) < 1e-10


# ----------------------------------------------------------------------------------
# light imports


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport sys\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_reading_a_log_and_the_ase_backend_load_no_torch(tmp_path):
    """A log written with an ASE calculator as the model, then read back and summarised
    and plotted through the command line: torch is never imported."""
    log = tmp_path / "lj.h5"
    write = f"""
import ase, numpy as np
from ase.calculators.lj import LennardJones
from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.md import run_md
atoms = ase.Atoms("Ar4", positions=[[0, 0, 0], [3.7, 0, 0], [0, 3.7, 0], [0, 0, 3.7]])
calc = BodyOrderCalculator(LennardJones(sigma=3.4, epsilon=0.01, rc=8.0, smooth=True), 2, cutoff=8.0)
run_md(atoms, calc, steps=3, timestep_fs=1.0, log={str(log)!r}, progress=False)
"""
    assert "torch" not in _modules_after(write)
    read = f"""
from ase_bodyorder import read_log
from ase_bodyorder.cli import main
assert len(read_log({str(log)!r}).step) == 4
assert main(["info", {str(log)!r}]) == 0
assert main(["report", {str(log)!r}, "-o", {str(tmp_path / "lj.png")!r}]) == 0
"""
    loaded = _modules_after(read)
    assert "torch" not in loaded and "metatomic" not in loaded
    assert "torch" not in _modules_after("import ase_bodyorder\nfrom ase_bodyorder.cli import build_parser\nbuild_parser()")


def test_public_names_stay_functions_whatever_is_imported_first():
    """A submodule named like a public function would replace it in the package once
    imported (the import system sets the attribute): every public name must survive
    the import of every submodule."""
    code = """
import importlib, pkgutil, ase_bodyorder
for module in pkgutil.walk_packages(ase_bodyorder.__path__, "ase_bodyorder."):
    if "sevennet" not in module.name and "ipi_bodyorder" not in module.name:
        importlib.import_module(module.name)
import types
bad = [n for n in ase_bodyorder.__all__ if isinstance(getattr(ase_bodyorder, n), types.ModuleType)]
assert not bad, bad
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

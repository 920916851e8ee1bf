"""SevenNet-0 packed: against SevenNet's own calculator on every subset, finite
differences, periodic cells, the locality probe and bad input."""

from __future__ import annotations

import itertools
import sys

import ase
import numpy as np
import pytest
from ase.build import bulk
from conftest import inclusion_exclusion, strain_derivative

pytest.importorskip("sevenn")

from ase_bodyorder import BodyOrderCalculator  # noqa: E402
from ase_bodyorder.backends.base import ClusterBatch  # noqa: E402
from ase_bodyorder.backends.sevennet import SevenNetBackend  # noqa: E402
from ase_bodyorder.checks import LocalityError  # noqa: E402


@pytest.fixture(scope="module")
def backends():
    return {dtype: SevenNetBackend("sevennet-0", dtype=dtype) for dtype in ("float32", "float64")}


@pytest.fixture(scope="module")
def sevennet_calculator():
    import warnings

    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SevenNetCalculator("7net-0", device="cpu")


def _cluster(symbol: str, n: int, seed: int, spacing: float) -> ase.Atoms:
    """n atoms on a jittered compact lattice, nearest neighbours about ``spacing`` apart."""
    rng = np.random.default_rng(seed)
    grid = np.array(list(itertools.product(range(2), repeat=3)), dtype=float)[:n] * spacing
    return ase.Atoms(f"{symbol}{n}", positions=grid + rng.normal(scale=0.08, size=(n, 3)))


def _table(atoms, evaluate):
    energies, forces = {}, {}
    n = len(atoms)
    for k in range(1, n + 1):
        for subset in itertools.combinations(range(n), k):
            e, f = evaluate(atoms[list(subset)])
            energies[subset] = e
            forces[subset] = np.zeros((n, 3))
            forces[subset][list(subset)] = f
    return energies, forces


@pytest.mark.parametrize("symbol, spacing", [("C", 1.5), ("Si", 2.3)])
def test_float32_equals_brute_force_over_sevennets_own_calculator(backends, sevennet_calculator, symbol, spacing):
    atoms = _cluster(symbol, 5, 1, spacing)

    def own(cluster):
        cluster.calc = sevennet_calculator
        return cluster.get_potential_energy(), cluster.get_forces()

    energies, forces = _table(atoms, own)
    for order in (2, 3):
        atoms.calc = BodyOrderCalculator(backends["float32"], order)
        # float32 round-off of energies of tens of eV, summed over up to 25 subsets
        assert abs(atoms.get_potential_energy() - inclusion_exclusion(energies, order)) < 5e-5
        assert np.abs(atoms.get_forces() - inclusion_exclusion(forces, order)).max() < 2e-3
        assert atoms.calc.results["subcluster_counts"][order - 1] > 0


@pytest.mark.parametrize("symbol, spacing", [("C", 1.5), ("Si", 2.3)])
def test_float64_packed_equals_one_subcluster_at_a_time(backends, symbol, spacing):
    backend = backends["float64"]
    atoms = _cluster(symbol, 5, 2, spacing)

    def alone(cluster):
        batch = ClusterBatch(cluster.positions, cluster.numbers, np.array([0, len(cluster)]))
        e, f = backend.evaluate(batch, forces=True)
        return e[0], f

    energies, forces = _table(atoms, alone)
    for order in (2, 3, 4):
        atoms.calc = BodyOrderCalculator(backend, order)
        assert abs(atoms.get_potential_energy() - inclusion_exclusion(energies, order)) < 1e-9
        assert np.abs(atoms.get_forces() - inclusion_exclusion(forces, order)).max() < 1e-9


def test_float64_forces_against_finite_differences(backends):
    atoms = _cluster("C", 6, 3, 1.45)
    atoms.calc = BodyOrderCalculator(backends["float64"], 3)
    forces = atoms.get_forces()
    step = 1e-4
    for atom, axis in [(0, 0), (3, 2), (5, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * step
            moved.calc = atoms.calc
            energies.append(moved.get_potential_energy())
        assert abs(-(energies[0] - energies[1]) / (2 * step) - forces[atom, axis]) < 1e-5


def test_precision_float32_against_float64(backends):
    """float32 moves dE_k by far less than the contributions, but by more than float64
    round-off: the reason float64 is the default for analysis."""
    atoms = _cluster("Si", 6, 4, 2.3)
    results = {}
    for dtype, backend in backends.items():
        atoms.calc = BodyOrderCalculator(backend, 3)
        atoms.get_potential_energy()
        results[dtype] = atoms.calc.results["body_order_energies"]
    difference = np.abs(results["float32"] - results["float64"])
    assert difference.max() < 1e-3
    assert np.all(np.abs(results["float64"][1:]) > 100 * difference[1:])


def test_periodic_supercell_and_stress(backends):
    """A primitive diamond cell and its 2x2x2 supercell: 8x the energy, the same stress
    (K = 2, every pair of images within 5 A counted once per lattice translation)."""
    backend = backends["float64"]
    primitive = bulk("C", "diamond", a=3.60)
    primitive.rattle(0.02, seed=1)
    supercell = primitive.repeat((2, 2, 2))
    values = []
    for atoms in (primitive, supercell):
        atoms.calc = BodyOrderCalculator(backend, 2)
        values.append((atoms.get_potential_energy(), atoms.get_stress()))
    assert abs(values[1][0] - 8 * values[0][0]) < 1e-8 * abs(values[1][0])
    assert np.abs(values[1][1] - values[0][1]).max() < 1e-8
    # the stress against a finite difference of the energy under strain
    atoms = primitive.copy()
    atoms.calc = BodyOrderCalculator(backend, 2)
    stress = atoms.get_stress(voigt=False)
    assert abs(strain_derivative(atoms, atoms.calc, 0, 1) - stress[0, 1]) < 1e-6


def test_locality_probe_accepts_the_one_layer_cutoff(backends):
    backend = backends["float32"]
    assert backend.default_cutoff == 5.0
    atoms = _cluster("Si", 4, 5, 2.3)
    atoms.calc = BodyOrderCalculator(backend, 2)  # probe at 5 A: passes
    atoms.get_potential_energy()
    atoms.calc = BodyOrderCalculator(backend, 2, cutoff=3.0)
    with pytest.raises(LocalityError, match="not local within cutoff=3"):
        atoms.get_potential_energy()


def test_bad_input(backends, monkeypatch):
    atoms = ase.Atoms("SiOg", positions=[[0, 0, 0], [2, 0, 0]])
    atoms.calc = BodyOrderCalculator(backends["float32"], 2)
    with pytest.raises(ValueError, match=r"\['Og'\].*not known to sevennet-0"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="dtype must be"):
        SevenNetBackend("sevennet-0", dtype="float16")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BodyOrderCalculator("/nowhere/model.pth", 2)
    monkeypatch.setitem(sys.modules, "sevenn", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"ase-bodyorder\[sevennet\]"):
        BodyOrderCalculator("sevennet-0", 2)


def test_plain_model_equals_sevennets_calculator(backends, sevennet_calculator):
    """The plain (untruncated) model of the backend, float32 and float64, on a periodic
    cell: energy, forces and stress as SevenNet's own calculator gives them."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=3)
    reference = atoms.copy()
    reference.calc = sevennet_calculator
    for dtype, tolerance in (("float32", 1e-5), ("float64", 5e-4)):
        atoms.calc = BodyOrderCalculator(backends[dtype], None)
        assert abs(atoms.get_potential_energy() - reference.get_potential_energy()) < tolerance * len(atoms)
        assert np.abs(atoms.get_forces() - reference.get_forces()).max() < 10 * tolerance
        assert np.abs(atoms.get_stress() - reference.get_stress()).max() < tolerance


def test_missing_sevenn_is_a_one_line_error_on_the_command_line(tmp_path, monkeypatch, capsys):
    from ase_bodyorder.cli import main

    path = tmp_path / "si2.xyz"
    ase.Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]]).write(path)
    monkeypatch.setitem(sys.modules, "sevenn", None)  # as if it were not installed
    assert main(["decompose", str(path), "-K", "2", "--model", "sevennet-0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ase-bodyorder[sevennet]" in err and "Traceback" not in err


def test_logs_name_the_exact_checkpoint(backends):
    """A log records the checkpoint's SHA-256 and the sevenn version, as it does a
    metatomic model's hash, so a run names the weights it used."""
    import hashlib
    from importlib.metadata import version

    from ase_bodyorder.md import log_metadata

    backend = backends["float32"]
    info = log_metadata(BodyOrderCalculator(backend, 2))
    assert info["model_sha256"] == hashlib.sha256(backend.path.read_bytes()).hexdigest()
    assert info["model_file"] == str(backend.path) and info["model"] == "sevennet-0"
    assert info["sevenn_version"] == version("sevenn") and info["modal"] == "" and info["dtype"] == "float32"


def test_models_command_lists_the_sevennet_models(monkeypatch, capsys):
    from ase_bodyorder.backends.sevennet import PRETRAINED
    from ase_bodyorder.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sevennet-0 (also 7net-0" in out and "checkpoint_sevennet_0.pth" in out
    assert all(f"\n{name}" in out for name in PRETRAINED) and "at its PBE fidelity" in out
    monkeypatch.setitem(sys.modules, "sevenn", None)  # as if it were not installed
    assert main(["models"]) == 0
    assert 'not installed; pip install "ase-bodyorder[sevennet]"' in capsys.readouterr().out


def test_sevennet_then_a_metatomic_model_in_one_process():
    """torch_geometric, imported by sevenn, breaks metatensor-torch's import when it comes
    first: a SevenNet model followed by a metatomic one must both work."""
    import subprocess

    code = """
import warnings; warnings.filterwarnings("ignore")
from ase_bodyorder.analysis import dimer_curve
a = dimer_curve("sevennet-0", ("H", "H"), [0.75])
b = dimer_curve("default", ("H", "H"), [0.75])
assert a.energy[0] < -3 and b.energy[0] < -3, (a.energy, b.energy)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

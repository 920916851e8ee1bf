"""CHGNet packed (one crystal graph per chunk): against CHGNet's own ASE calculator on
every subset of small Si and C clusters, the full-order expansion against the whole
cluster, periodic cells and stress, the locality probe, names and the command line."""

from __future__ import annotations

import contextlib
import io
import itertools
import subprocess
import sys

import ase
import numpy as np
import pytest
from ase.build import bulk
from conftest import inclusion_exclusion, strain_derivative

pytest.importorskip("chgnet")
# CHGNet's calculator (the reference here) reads the volume of a lattice that has a gradient
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning")

from ase_bodyorder import BodyOrderCalculator  # noqa: E402
from ase_bodyorder.backends import make_backend  # noqa: E402
from ase_bodyorder.backends.base import ClusterBatch  # noqa: E402
from ase_bodyorder.backends.chgnet import ChgnetBackend, is_chgnet_model  # noqa: E402
from ase_bodyorder.checks import LocalityError  # noqa: E402

# CHGNet's calculator computes in float32: measured on these clusters, the packed
# float32 and float64 backends agree with it within 5.4e-6 eV and 3.8e-5 eV/A
E_TOLERANCE, F_TOLERANCE = 2e-5, 1.5e-4


@pytest.fixture(scope="module")
def backends():
    return {dtype: ChgnetBackend("chgnet", dtype=dtype) for dtype in ("float32", "float64")}


@pytest.fixture(scope="module")
def chgnet_calculator():
    from chgnet.model.dynamics import CHGNetCalculator

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its device
        return CHGNetCalculator(use_device="cpu", on_isolated_atoms="ignore")


def boxed(cluster: ase.Atoms, vacuum: float = 13.0) -> ase.Atoms:
    """The isolated cluster as CHGNet's calculator must see it: in a periodic box with
    ``vacuum`` A between images, more than CHGNet's 6 A atom-graph cutoff."""
    box = cluster.copy()
    box.positions -= box.positions.min(axis=0) - vacuum / 2
    box.cell = np.diag(np.ptp(cluster.positions, axis=0) + vacuum)
    box.pbc = True
    return box


def own_energy_forces(calculator, cluster: ase.Atoms):
    box = boxed(cluster)
    box.calc = calculator
    return float(box.get_potential_energy()), np.array(box.get_forces(), dtype=np.float64)


def _cluster(symbol: str, n: int, seed: int, spacing: float) -> ase.Atoms:
    """n atoms on a jittered compact lattice, nearest neighbours about ``spacing`` apart."""
    rng = np.random.default_rng(seed)
    grid = np.array(list(itertools.product(range(2), repeat=3)), dtype=float)[:n] * spacing
    return ase.Atoms(f"{symbol}{n}", positions=grid + rng.normal(scale=0.1, size=(n, 3)))


@pytest.mark.parametrize("symbol, spacing", [("Si", 2.35), ("C", 1.5)])
def test_every_subset_equals_chgnets_own_calculator(backends, chgnet_calculator, symbol, spacing):
    """Brute force: every subset of a five-atom cluster, packed into one graph, against
    CHGNet's calculator on each subset alone (in a box); the full-order expansion
    against its energy and forces of the whole cluster."""
    atoms = _cluster(symbol, 5, 1, spacing)
    subsets = [s for k in range(1, 6) for s in itertools.combinations(range(5), k)]
    reference = [own_energy_forces(chgnet_calculator, atoms[list(s)]) for s in subsets]
    energies = np.array([e for e, _ in reference])
    forces = np.concatenate([f for _, f in reference])
    batch = ClusterBatch.from_clusters([(atoms.numbers[list(s)], atoms.positions[list(s)]) for s in subsets])
    for backend in backends.values():
        packed_e, packed_f = backend.evaluate(batch, forces=True)
        assert np.abs(packed_e - energies).max() < E_TOLERANCE
        assert np.abs(packed_f - forces).max() < F_TOLERANCE
        assert np.array_equal(backend.evaluate(batch, forces=False)[0], packed_e)  # energies alone
    table = {s: e for s, e in zip(subsets, energies)}
    whole_e, whole_f = table[subsets[-1]], reference[-1][1]
    for backend in backends.values():
        atoms.calc = BodyOrderCalculator(backend, 5)  # full order: the plain model
        assert abs(atoms.get_potential_energy() - whole_e) < E_TOLERANCE
        assert np.abs(atoms.get_forces() - whole_f).max() < F_TOLERANCE
        atoms.calc = BodyOrderCalculator(backend, 2)
        assert abs(atoms.get_potential_energy() - inclusion_exclusion(table, 2)) < 2 * E_TOLERANCE


def test_full_order_equals_the_plain_model_in_float64(backends):
    """E^(N) is the plain model exactly, to float64 round-off."""
    atoms = _cluster("Si", 5, 2, 2.35)
    backend = backends["float64"]
    atoms.calc = BodyOrderCalculator(backend, 5)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    plain = backend.evaluate_full(atoms, forces=True, stress=False)
    assert abs(energy - plain["energy"]) < 1e-9
    assert np.abs(forces - plain["forces"]).max() < 1e-9


def test_plain_model_of_a_periodic_cell_equals_chgnets_calculator(backends, chgnet_calculator):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=3)
    reference = atoms.copy()
    reference.calc = chgnet_calculator
    for backend in backends.values():
        atoms.calc = BodyOrderCalculator(backend, None)
        assert abs(atoms.get_potential_energy() - reference.get_potential_energy()) < 1e-5 * len(atoms)
        assert np.abs(atoms.get_forces() - reference.get_forces()).max() < F_TOLERANCE
        assert np.abs(atoms.get_stress() - reference.get_stress()).max() < 1e-5


def test_periodic_stress_against_strain(backends):
    """K = 2 in a primitive cell: the stress (from the subclusters' virials) against a
    finite difference of the energy under strain, float64."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.03, seed=1)
    atoms.calc = BodyOrderCalculator(backends["float64"], 2)
    stress = atoms.get_stress(voigt=False)
    assert abs(strain_derivative(atoms, atoms.calc, 0, 1) - stress[0, 1]) < 1e-6


def test_locality_probe_accepts_the_atom_graph_cutoff(backends):
    backend = backends["float32"]
    assert backend.default_cutoff == 6.0
    atoms = _cluster("Si", 4, 5, 2.35)
    atoms.calc = BodyOrderCalculator(backend, 2)  # probe at 6 A: passes, packing too
    atoms.get_potential_energy()
    atoms.calc = BodyOrderCalculator(backend, 2, cutoff=3.0)  # the bond graph's: too short
    with pytest.raises(LocalityError, match="not local within cutoff=3"):
        atoms.get_potential_energy()


def test_names_and_bad_input(monkeypatch):
    assert is_chgnet_model("chgnet") and is_chgnet_model("CHGNet_0.3.0") and is_chgnet_model("chgnet-r2scan")
    assert not is_chgnet_model("sevennet-0") and not is_chgnet_model("default")
    with pytest.raises(ValueError, match="dtype must be"):
        ChgnetBackend("chgnet", dtype="float16")
    with pytest.raises(ValueError, match="variant and extensions_directory"):
        make_backend("chgnet", variant="x")
    monkeypatch.setitem(sys.modules, "chgnet", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"ase-bodyorder\[chgnet\]"):
        BodyOrderCalculator("chgnet", 2)


def test_r2scan_and_a_loaded_model(chgnet_calculator):
    """The r2SCAN checkpoint by name, and a loaded CHGNet object (copied, not changed),
    each against CHGNet's calculator with the same weights."""
    import torch
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    cluster = _cluster("Si", 3, 7, 2.35)
    with contextlib.redirect_stdout(io.StringIO()):
        r2scan = CHGNet.load(model_name="r2scan", use_device="cpu", verbose=False)
        calculator = CHGNetCalculator(r2scan, use_device="cpu")
    batch = ClusterBatch.from_clusters([(cluster.numbers, cluster.positions)])
    for model, dtype in (("chgnet-r2scan", "float32"), (r2scan, "float64")):
        energy = make_backend(model, dtype=dtype).evaluate(batch, False)[0][0]
        assert abs(energy - own_energy_forces(calculator, cluster)[0]) < E_TOLERANCE
    # the loaded model is the user's: still float32, its converter as CHGNet's calculator set it
    assert next(r2scan.parameters()).dtype == torch.float32 and r2scan.graph_converter.on_isolated_atoms == "warn"
    assert abs(energy - own_energy_forces(chgnet_calculator, cluster)[0]) > 0.1  # another model


def test_command_line_decompose(tmp_path, capsys):
    from ase_bodyorder.cli import main

    path = tmp_path / "si4.xyz"
    atoms = _cluster("Si", 4, 3, 2.35)
    atoms.write(path)
    assert main(["decompose", str(path), "--model", "chgnet", "-K", "2"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "si4.xyz" in line).split()
    atoms.calc = BodyOrderCalculator("chgnet", 2)
    assert abs(float(row[4]) - atoms.get_potential_energy()) < 1e-5  # E^(2), printed to 1e-6 eV
    assert "CHGNet v" not in out  # CHGNet's own prints stay out of the results
    # a log of a CHGNet run says which checkpoint and which chgnet ran it
    log = tmp_path / "si4.h5"
    assert main(["md", str(path), "--model", "chgnet", "-K", "2", "--steps", "2", "--log", str(log), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(log)]) == 0
    out = capsys.readouterr().out
    assert "chgnet_version:" in out and "model_file:" in out and ".pth.tar" in out


def test_missing_chgnet_is_a_one_line_error_on_the_command_line(tmp_path, monkeypatch, capsys):
    from ase_bodyorder.cli import main

    path = tmp_path / "si2.xyz"
    ase.Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]]).write(path)
    monkeypatch.setitem(sys.modules, "chgnet", None)
    assert main(["decompose", str(path), "-K", "2", "--model", "chgnet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ase-bodyorder[chgnet]" in err and "Traceback" not in err


def test_models_command_lists_the_chgnet_models(monkeypatch, capsys):
    from ase_bodyorder.backends.chgnet import PRETRAINED
    from ase_bodyorder.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "chgnet-0.3.0 (also chgnet)" in out and "chgnet_0.3.0_e29f68s314m37.pth.tar" in out
    assert all(f"\n{name}" in out for name in PRETRAINED)
    monkeypatch.setitem(sys.modules, "chgnet", None)  # as if it were not installed
    assert main(["models"]) == 0
    assert 'not installed; pip install "ase-bodyorder[chgnet]"' in capsys.readouterr().out


def test_logs_name_the_exact_checkpoint(backends):
    import hashlib
    from importlib.metadata import version

    from ase_bodyorder.md import log_metadata

    backend = backends["float32"]
    info = log_metadata(BodyOrderCalculator(backend, 2))
    assert info["model_sha256"] == hashlib.sha256(backend.path.read_bytes()).hexdigest()
    assert info["model"] == "chgnet-0.3.0" and info["chgnet_version"] == version("chgnet")


def test_chgnet_then_a_metatomic_model_in_one_process():
    """chgnet (torch, pymatgen) imported first, then a CHGNet and a metatomic model."""
    code = """
import warnings; warnings.filterwarnings("ignore")
import chgnet.model
from ase_bodyorder.analysis import dimer_curve
a = dimer_curve("chgnet", ("Si", "Si"), [2.3])
b = dimer_curve("default", ("H", "H"), [0.75])
assert a.energy[0] < -3 and b.energy[0] < -3, (a.energy, b.energy)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

"""Native MACE models (mace-torch .model files), packed: against mace-torch's own
calculator on every subcluster and by brute-force inclusion-exclusion, finite and
periodic; against the shipped metatomic export of the same weights; the command line
and bad input.

Runs in the MACE environment (the test-mace extra; mace-torch pins e3nn 0.4.4, which
sevenn in the test extra cannot share): .ci/run makes it after the main suite. Skipped
in the main environment.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from conftest import inclusion_exclusion

pytest.importorskip("mace")

import torch  # noqa: E402

from ase_bodyorder import BodyOrderCalculator  # noqa: E402
from ase_bodyorder.backends import model_label  # noqa: E402
from ase_bodyorder.backends.mace import MaceBackend  # noqa: E402
from ase_bodyorder.errors import InputError, LocalityError, MissingDependencyError  # noqa: E402
from ase_bodyorder.mbe import evaluate_subclusters, plan_subclusters  # noqa: E402

pytestmark = [  # other packages' noise: e3nn 0.4.4 under torch >= 2.6, TorchScript code generation
    pytest.mark.filterwarnings("ignore:Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD:UserWarning"),
    pytest.mark.filterwarnings("ignore:The TorchScript type system:UserWarning"),
]
SCRIPT = Path(__file__).resolve().parent.parent / "training" / "mace" / "native_from_export.py"
#: metatrain feeds MACE (y, z, x): the export equals the native model at these axes
YZX = [1, 2, 0]


def _script():
    spec = importlib.util.spec_from_file_location("native_from_export", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def native_file(tmp_path_factory):
    """mace-h-fci rebuilt as a native mace-torch file (training/mace/native_from_export.py)."""
    path = tmp_path_factory.mktemp("mace") / "mace-h-fci.model"
    torch.save(_script().native_from_export(), path)
    return path


@pytest.fixture(scope="module")
def backend(native_file):
    return MaceBackend(native_file)


@pytest.fixture(scope="module")
def own(native_file):
    """mace-torch's own ASE calculator, float64. It sets torch's default dtype to its
    own: put it back, so that the backend is tested under torch's usual float32 default."""
    from mace.calculators import MACECalculator

    previous = torch.get_default_dtype()
    calculator = MACECalculator(model_paths=str(native_file), device="cpu", default_dtype="float64")
    torch.set_default_dtype(previous)
    return calculator


def _cluster(n: int, seed: int, box: float = 2.6, closest: float = 0.7) -> ase.Atoms:
    """n H atoms uniform in a box, none closer than ``closest``: every pair within r_max."""
    rng = np.random.default_rng(seed)
    points: list[np.ndarray] = []
    while len(points) < n:
        p = rng.uniform(0, box, 3)
        if all(np.linalg.norm(p - q) >= closest for q in points):
            points.append(p)
    return ase.Atoms(f"H{n}", positions=np.array(points))


def _periodic() -> ase.Atoms:
    """Two H in a cell of 3.5-3.7 A: r_max = 4 A reaches the neighbouring images, so
    subclusters hold several images of one atom (K = 3: 2 + 11 + 94 subclusters)."""
    atoms = ase.Atoms("H2", positions=[[0.1, 0.2, 0.0], [1.0, 0.3, 0.4]], cell=[3.6, 3.7, 3.5], pbc=True)
    atoms.rattle(0.05, seed=3)
    return atoms


def _alone(atoms: ase.Atoms, calculator):
    cluster = atoms.copy()
    cluster.calc = calculator
    return cluster.get_potential_energy(), cluster.get_forces()


def test_packed_subclusters_equal_maces_own_calculator(backend, own):
    """Every subset of a 6-atom cluster (63 subclusters) in one packed call, against
    mace-torch's calculator one subcluster at a time."""
    atoms = _cluster(6, 1)
    subclusters = plan_subclusters(atoms, 6, None)
    packed = evaluate_subclusters(subclusters, backend, forces=True)
    energies, forces = zip(*(_alone(cluster, own) for cluster in subclusters))
    assert len(energies) == 63
    np.testing.assert_allclose(packed["energies"], energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(packed["forces"], np.concatenate(forces), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n, seed", [(5, 2), (6, 4)])
def test_calculator_equals_brute_force_over_maces_own_calculator(native_file, own, n, seed):
    atoms = _cluster(n, seed)
    energies, forces = {}, {}
    for k in range(1, n + 1):
        for subset in itertools.combinations(range(n), k):
            energies[subset], f = _alone(atoms[list(subset)], own)
            forces[subset] = np.zeros((n, 3))
            forces[subset][list(subset)] = f
    for order in (2, 3, n):
        atoms.calc = BodyOrderCalculator(str(native_file), order)
        assert abs(atoms.get_potential_energy() - inclusion_exclusion(energies, order)) < 1e-9
        assert np.abs(atoms.get_forces() - inclusion_exclusion(forces, order)).max() < 1e-9
    # at K = N nothing is left out: the plain model
    full = _alone(atoms, own)
    assert abs(atoms.get_potential_energy() - full[0]) < 1e-9
    assert np.abs(atoms.get_forces() - full[1]).max() < 1e-9


def test_periodic_cell_against_maces_own_calculator(native_file, own):
    """A cell smaller than r_max: the packed expansion equals the same expansion with
    mace-torch's calculator on every subcluster (images included), energy, forces and
    stress; the plain model equals mace-torch's on the periodic cell."""
    atoms = _periodic()
    for order in (2, 3):
        packed = atoms.copy()
        packed.calc = BodyOrderCalculator(str(native_file), order)
        one_by_one = atoms.copy()
        one_by_one.calc = BodyOrderCalculator(own, order, cutoff=4.0)
        assert abs(packed.get_potential_energy() - one_by_one.get_potential_energy()) < 1e-9
        assert np.abs(packed.get_forces() - one_by_one.get_forces()).max() < 1e-9
        assert np.abs(packed.get_stress() - one_by_one.get_stress()).max() < 1e-9
        counts = packed.calc.results["subcluster_counts"]
        assert counts[1] > 1  # pairs of images: more pairs than the one pair of atoms
    plain = atoms.copy()
    plain.calc = BodyOrderCalculator(str(native_file), None)
    reference = atoms.copy()
    reference.calc = own
    assert abs(plain.get_potential_energy() - reference.get_potential_energy()) < 1e-9
    assert np.abs(plain.get_forces() - reference.get_forces()).max() < 1e-9
    assert np.abs(plain.get_stress() - reference.get_stress()).max() < 1e-9


def test_native_file_equals_the_shipped_export(native_file):
    """The rebuilt native model and the shipped metatomic mace-h-fci.pt, both through
    BodyOrderCalculator, finite and periodic. metatrain hands MACE the axes as (y, z, x);
    the export's Clebsch-Gordan constants were made in float32, so it is not rotation
    invariant beyond ~1e-8 eV: the same weights agree exactly in its frame only."""
    finite = _cluster(6, 5)
    periodic = _periodic()
    for atoms, order in ((finite, 3), (finite, None), (periodic, 2)):
        exported = atoms.copy()
        exported.calc = BodyOrderCalculator("mace-h-fci", order)
        native = atoms.copy()
        native.positions = atoms.positions[:, YZX]
        native.set_cell(atoms.cell[:][:, YZX])
        native.calc = BodyOrderCalculator(str(native_file), order)
        assert abs(native.get_potential_energy() - exported.get_potential_energy()) < 1e-9
        # F_export[:, a] = F_native[:, position of a in YZX]
        back = np.argsort(YZX)
        assert np.abs(native.get_forces()[:, back] - exported.get_forces()).max() < 1e-9
        if atoms.pbc.all():
            stress = native.get_stress(voigt=False)[back][:, back]
            assert np.abs(stress - exported.get_stress(voigt=False)).max() < 1e-9
        # in the lab frame: the export's float32 constants, no more
        lab = atoms.copy()
        lab.calc = BodyOrderCalculator(str(native_file), order)
        assert abs(lab.get_potential_energy() - exported.get_potential_energy()) < 1e-6


def test_command_line_decompose_with_a_model_file(native_file, tmp_path, capsys):
    from ase_bodyorder.cli import main

    path = tmp_path / "h5.xyz"
    _cluster(5, 6).write(path)
    atoms = ase.io.read(path)  # as the command reads it (the file rounds the positions)
    # in a fresh process (torch's default dtype float32, mace imported there): stdout is
    # the JSON alone, whatever mace prints when it is imported
    command = ["decompose", str(path), "-K", "3", "--model", str(native_file), "--format", "json"]
    done = subprocess.run([sys.executable, "-m", "ase_bodyorder.cli", *command], capture_output=True, text=True,
                          check=True)
    row = json.loads(done.stdout)[0]
    atoms.calc = BodyOrderCalculator(str(native_file), 3)
    assert abs(row["truncated_energies"][-1] - atoms.get_potential_energy()) < 1e-9
    assert row["subcluster_counts"] == atoms.calc.results["subcluster_counts"].tolist()
    assert model_label(str(native_file), short=True) == "mace-h-fci"
    # a file that does not exist: refused before anything is loaded, in one line
    assert main(["decompose", str(path), "-K", "2", "--model", str(tmp_path / "missing.model")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.model' does not exist" in err


def test_float32_and_defaults(native_file, backend):
    atoms = _cluster(6, 7)
    results = {}
    for dtype in ("float32", "float64"):
        atoms.calc = BodyOrderCalculator(str(native_file), 3, dtype=dtype)
        results[dtype] = atoms.get_potential_energy()
        assert atoms.calc.backend.dtype == dtype and atoms.calc.backend.model.r_max.dtype == getattr(torch, dtype)
    assert 0 < abs(results["float32"] - results["float64"]) < 1e-3
    assert backend.default_cutoff == 4.0 and backend.atomic_types == [1] and backend.packed
    info = backend.describe()
    assert info["model_class"] == "ScaleShiftMACE" and info["head"] == "Default" and info["mace_version"]
    assert len(info["model_sha256"]) == 64


def test_locality_probe_accepts_r_max_and_refuses_less(native_file):
    atoms = _cluster(5, 8)
    atoms.calc = BodyOrderCalculator(str(native_file), 2)
    atoms.get_potential_energy()  # the probe at r_max = 4 A passes
    atoms.calc = BodyOrderCalculator(str(native_file), 2, cutoff=2.0)
    with pytest.raises(LocalityError):
        atoms.get_potential_energy()


def test_files_that_are_not_mace_models_are_refused(tmp_path, capsys):
    from ase_bodyorder.cli import main

    text = tmp_path / "notes.model"
    text.write_text("not a model\n")
    state = tmp_path / "state.model"
    torch.save({"weight": torch.zeros(3)}, state)
    linear = tmp_path / "linear.model"
    torch.save(torch.nn.Linear(2, 2), linear)
    exported = tmp_path / "exported.model"  # a metatomic export (TorchScript), misnamed
    exported.write_bytes((Path(__file__).resolve().parent.parent / "ase_bodyorder/models/mace-h-fci.pt").read_bytes())
    linear_pt = tmp_path / "linear-k2.model"  # TorchScript whose classes (featomic's) are not loaded
    linear_pt.write_bytes((Path(__file__).resolve().parent.parent / "ase_bodyorder/models/linear-h-fci-k2.pt").read_bytes())
    for path, message in ((text, "not a MACE model file"), (state, "holds a dict"), (linear, "holds a Linear"),
                          (exported, "is a TorchScript .compiled. model"), (linear_pt, "is a TorchScript .compiled. model")):
        with pytest.raises(InputError, match=message):
            MaceBackend(path)
    h2 = tmp_path / "h2.xyz"
    ase.Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]]).write(h2)
    assert main(["decompose", str(h2), "-K", "2", "--model", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a MACE energy model" in err and "Traceback" not in err


def test_unknown_head_and_bad_dtype_are_refused(native_file):
    with pytest.raises(InputError, match="head 'omat' is not one of"):
        BodyOrderCalculator(str(native_file), 2, variant="omat")
    with pytest.raises(InputError, match="dtype must be"):
        MaceBackend(native_file, dtype="float16")


def test_missing_mace_torch_names_the_extra(native_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "mace", None)  # as if mace-torch were not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "ase-bodyorder\[mace\]"'):
        BodyOrderCalculator(str(native_file), 2)

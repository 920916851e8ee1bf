"""The truncated model exported as a metatomic model (ase_bodyorder/export.py), run by
metatomic alone, against BodyOrderCalculator (itself tested against brute force)."""

import importlib.util
import itertools
import re
from pathlib import Path
from typing import Dict, List, Optional

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.calculator import all_changes

from ase_bodyorder.calculator import BodyOrderCalculator
from ase_bodyorder.errors import InputError
from ase_bodyorder.export import describe_model_file, export_truncated

metatomic_ase = pytest.importorskip("metatomic_ase")
from metatensor.torch import Labels, TensorBlock, TensorMap  # noqa: E402
from metatomic.torch import (  # noqa: E402
    ModelEvaluationOptions,
    ModelOutput,
    System,
    load_atomistic_model,
)

MODELS = ["pet-h-fci", "soap-bpnn-h-fci", "mace-h-fci"]
TOLERANCE = 1e-9  # eV, eV/A, eV/A^3
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "ipi"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export on first use, once per (model, K)."""
    folder = tmp_path_factory.mktemp("exported")
    cache = {}

    def get(model: str, order: int) -> Path:
        if (model, order) not in cache:
            cache[model, order] = export_truncated(model, order, folder / f"{model}-k{order}.pt")
        return cache[model, order]

    return get


def finite(n: int) -> ase.Atoms:
    """n H atoms 1.1-2.6 A from their predecessor: every subset is connected at 4 A."""
    rng = np.random.default_rng(n)
    points = [np.zeros(3)]
    while len(points) < n:
        p = points[-1] + rng.normal(size=3)
        if 1.1 <= np.linalg.norm(p - points[-1]) <= 2.6 and all(np.linalg.norm(p - q) > 0.9 for q in points):
            points.append(p)
    return ase.Atoms(numbers=[1] * n, positions=points)


def periodic(n: int) -> ase.Atoms:
    """n H atoms in a skewed cell thinner than the 4 A cutoff: a subcluster can hold
    two images of one atom."""
    rng = np.random.default_rng(10 + n)
    cell = np.array([[3.3, 0.0, 0.0], [0.4, 3.6, 0.0], [0.2, -0.3, 4.6]])
    while True:
        atoms = ase.Atoms(numbers=[1] * n, scaled_positions=rng.uniform(size=(n, 3)), cell=cell, pbc=True)
        if n == 1 or atoms.get_all_distances(mic=True)[np.triu_indices(n, 1)].min() > 1.0:
            return atoms


@pytest.fixture(scope="module")
def reference():
    """One BodyOrderCalculator per model (its start-up probe done once), K set per use."""
    cache = {}

    def get(model: str, order: int) -> BodyOrderCalculator:
        if model not in cache:
            cache[model] = BodyOrderCalculator(model, order)
        cache[model].set(max_order=order)
        return cache[model]

    return get


def compare(path: Path, ours: BodyOrderCalculator, order: int, structures: list, optimize: bool) -> dict:
    """Largest differences between the exported file (metatomic's ASE calculator) and
    BodyOrderCalculator, over the structures. ``optimize=False`` skips TorchScript's
    profiling passes (the first calls then take 0.5 s instead of 2 s), as an engine may."""
    extra = {f"ase-bodyorder::dE_{k}": ModelOutput(unit="eV", sample_kind="system") for k in range(1, order + 1)}
    engine = metatomic_ase.MetatomicCalculator(str(path), additional_outputs=extra, check_consistency=True)
    differences = {}
    for atoms in structures:
        properties = ["energy", "forces", "energies"] + (["stress"] if atoms.pbc.all() else [])
        with torch.jit.optimized_execution(optimize):
            engine.calculate(atoms.copy(), properties, all_changes)
        ours.calculate(atoms.copy(), properties, all_changes)
        for name in properties:
            difference = np.abs(engine.results[name] - ours.results[name]).max()
            differences[name] = max(differences.get(name, 0.0), difference)
        body_orders = [float(engine.additional_outputs[name].block().values.detach().sum()) for name in extra]
        difference = np.abs(np.array(body_orders) - ours.results["body_order_energies"]).max()
        differences["dE_k"] = max(differences.get("dE_k", 0.0), difference)
    return differences


CASES = [(model, order) for model in MODELS for order in (1, 2, 3, 4)]


@pytest.mark.parametrize("model, order", CASES)
def test_exported_equals_calculator(exported, reference, model, order):
    # K = 4: few atoms only (every subset of the finite cluster is connected)
    n_finite, n_periodic = (5, 2) if order == 4 else (6, 3)
    structures = [finite(n_finite), periodic(n_periodic)]
    # the engine's default TorchScript settings for one case, the quick ones elsewhere
    optimize = (model, order) == ("pet-h-fci", 3)
    differences = compare(exported(model, order), reference(model, order), order, structures, optimize)
    print(model, order, {name: f"{value:.1e}" for name, value in differences.items()})
    assert max(differences.values()) < TOLERANCE, differences


def test_two_images_of_one_atom_in_a_subcluster():
    # the premise of the periodic cases: the cell is thinner than the cutoff
    atoms = periodic(3)
    heights = 1 / np.linalg.norm(np.linalg.inv(atoms.cell).T, axis=1)
    assert heights.min() < 4.0


# --------------------------------------------------------------------------------------
# LAMMPS: explicit ghost atoms (zero cell shifts), the local atoms selected


def ghosts(atoms: ase.Atoms, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Local atoms, then every periodic image within ``reach`` of one of them: positions
    and the local atom each copies (as LAMMPS's ghosts, but only as far as needed)."""
    heights = 1 / np.linalg.norm(np.linalg.inv(atoms.cell).T, axis=1)
    n = [int(np.ceil(reach / h)) + 1 for h in heights]
    positions, parents = [atoms.positions], [np.arange(len(atoms))]
    for shift in itertools.product(*(range(-m, m + 1) for m in n)):
        if shift == (0, 0, 0):
            continue
        images = atoms.positions + np.array(shift) @ atoms.cell.array
        near = np.linalg.norm(images[:, None] - atoms.positions[None], axis=2).min(axis=1) <= reach
        positions.append(images[near])
        parents.append(np.arange(len(atoms))[near])
    return np.concatenate(positions), np.concatenate(parents)


def lammps_style_call(model, atoms: ase.Atoms) -> tuple[float, np.ndarray]:
    """Energy and forces (ghost forces folded back) with a hand-built System."""
    reach = model.capabilities().interaction_range
    positions, parents = ghosts(atoms, reach)
    positions = torch.tensor(positions, requires_grad=True)
    system = System(
        types=torch.tensor(atoms.numbers[parents], dtype=torch.int32),
        positions=positions,
        cell=torch.tensor(atoms.cell.array),
        pbc=torch.tensor([True, True, True]),
    )
    distances = torch.cdist(positions.detach(), positions.detach())
    for options in model.requested_neighbor_lists():
        pairs = (distances < options.cutoff) & ~torch.eye(len(parents), dtype=torch.bool)
        if not options.full_list:
            pairs = torch.triu(pairs)
        i, j = torch.nonzero(pairs, as_tuple=True)
        zeros = torch.zeros_like(i)
        samples = Labels(["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"], torch.stack([i, j, zeros, zeros, zeros], 1).to(torch.int32))
        vectors = (positions[j] - positions[i]).reshape(-1, 3, 1)
        block = TensorBlock(vectors, samples, [Labels("xyz", torch.tensor([[0], [1], [2]]))], Labels("distance", torch.tensor([[0]])))
        system.add_neighbor_list(options, block)
    local = torch.tensor([[0, a] for a in range(len(atoms))], dtype=torch.int32)
    evaluation = ModelEvaluationOptions(
        length_unit="angstrom",
        outputs={"energy": ModelOutput(unit="eV", sample_kind="system")},
        selected_atoms=Labels(["system", "atom"], local),
    )
    with torch.jit.optimized_execution(False):  # quicker first calls (see compare)
        energy = model([system], evaluation, check_consistency=True)["energy"].block().values.sum()
        (gradient,) = torch.autograd.grad(energy, positions)
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, parents, -gradient.numpy())
    return float(energy.detach()), forces


@pytest.mark.parametrize("model, order, n", [("pet-h-fci", 3, 3), ("soap-bpnn-h-fci", 2, 3), ("mace-h-fci", 4, 1)])
def test_lammps_style_ghosts(exported, model, order, n):
    import sphericart.torch  # noqa: F401  (SOAP-BPNN's extension, as metatomic's loader would need)

    loaded = load_atomistic_model(str(exported(model, order)))
    atoms = periodic(n)
    energy, forces = lammps_style_call(loaded, atoms)
    ours = BodyOrderCalculator(model, order)
    atoms.calc = ours
    differences = abs(energy - atoms.get_potential_energy()), np.abs(forces - atoms.get_forces()).max()
    print(model, order, "LAMMPS-style energy, forces:", [f"{d:.1e}" for d in differences])
    assert max(differences) < TOLERANCE


def test_interaction_range_covers_the_ghosts(exported):
    # a ghost shell thinner than the declared range loses subclusters: the range is needed
    loaded = load_atomistic_model(str(exported("pet-h-fci", 3)))
    assert loaded.capabilities().interaction_range == pytest.approx(8.0)
    atoms = periodic(3)
    ours = BodyOrderCalculator("pet-h-fci", 3)
    atoms.calc = ours
    full, _ = lammps_style_call(loaded, atoms)
    loaded.capabilities().interaction_range = 4.0
    short, _ = lammps_style_call(loaded, atoms)
    assert abs(full - atoms.get_potential_energy()) < TOLERANCE
    assert abs(short - atoms.get_potential_energy()) > 1e-4


# --------------------------------------------------------------------------------------
# the file itself


def test_file_declares_what_it_needs(exported):
    path = exported("soap-bpnn-h-fci", 2)
    text = describe_model_file(path)
    assert "body order K: 2" in text
    assert "cutoff: 4 angstrom" in text
    assert "wrapped model: soap-bpnn-h-fci" in text
    assert "extensions: sphericart_torch" in text
    assert "ase-bodyorder::dE_2" in text
    loaded = load_atomistic_model(str(path))
    capabilities = loaded.capabilities()
    assert capabilities.dtype == "float64" and capabilities.length_unit == "angstrom"
    assert list(capabilities.atomic_types) == [1]
    assert loaded.metadata().extra["ase-bodyorder::max_order"] == "2"
    assert "extensions: none" in describe_model_file(exported("pet-h-fci", 2))


def test_describe_a_plain_model():
    from ase_bodyorder.models import resolve_model

    text = describe_model_file(resolve_model("mace-h-fci"))
    assert "not a truncated model" in text


# --------------------------------------------------------------------------------------
# refusals: one clear line, nothing written


def test_refuses_sevennet_and_ase_calculators(tmp_path):
    from ase.calculators.emt import EMT

    for model, words in [("7net-0", "SevenNet"), ("model.pth", "SevenNet"), (EMT(), "ASE calculator")]:
        with pytest.raises(InputError, match=words) as error:
            export_truncated(model, 2, tmp_path / "out.pt")
        assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("order", [0, 5, 2.0, True])
def test_refuses_unsupported_orders(tmp_path, order):
    with pytest.raises(InputError, match="body orders 1 to 4"):
        export_truncated("pet-h-fci", order, tmp_path / "out.pt")
    assert not list(tmp_path.iterdir())


class Charges(torch.nn.Module):
    """A metatomic model with no energy output."""

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput], selected_atoms: Optional[Labels]) -> Dict[str, TensorMap]:
        return {}


def test_refuses_a_model_without_energy(tmp_path):
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata

    capabilities = ModelCapabilities(
        outputs={"mtt::charges": ModelOutput(unit="", sample_kind="atom")},
        atomic_types=[1], interaction_range=0.0, length_unit="angstrom", supported_devices=["cpu"], dtype="float64",
    )
    AtomisticModel(Charges().eval(), ModelMetadata(), capabilities).save(str(tmp_path / "charges.pt"))
    with pytest.raises(InputError, match="no 'energy' output"):
        export_truncated(tmp_path / "charges.pt", 2, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_refuses_an_existing_file(tmp_path):
    target = tmp_path / "out.pt"
    target.write_text("keep me")
    with pytest.raises(InputError, match="overwrite=True"):
        export_truncated("pet-h-fci", 2, target)
    assert target.read_text() == "keep me"
    export_truncated("pet-h-fci", 1, target, overwrite=True)
    assert "body order K: 1" in describe_model_file(target)


# --------------------------------------------------------------------------------------
# i-PI's own metatomic PES, against the plugin run of the same input


def _ipi_potentials(folder: Path, xml: str, steps: int, monkeypatch) -> np.ndarray:
    from ipi.scripting import InteractiveSimulation

    xml = re.sub(r"<total_steps>\s*\d+\s*</total_steps>", f"<total_steps>{steps}</total_steps>", xml)
    xml = re.sub(r"<output prefix='[\w-]+'>", "<output prefix='run'>", xml)
    xml = re.sub(r"stride='\d+'", "stride='1'", xml)
    monkeypatch.chdir(folder)
    InteractiveSimulation(xml).run(steps)
    # columns: step, time, conserved, temperature, kinetic_cv, potential
    return np.loadtxt(folder / "run.out", ndmin=2)[:, 5]


def test_ipi_runs_the_exported_file(tmp_path, monkeypatch):
    pytest.importorskip("ipi")
    metatomic_run = tmp_path / "metatomic"
    plugin_run = tmp_path / "plugin"
    for folder in (metatomic_run, plugin_run):
        folder.mkdir()
        (folder / "h16.xyz").write_text((EXAMPLES / "h16.xyz").read_text())
    export_truncated("pet-h-fci", 3, metatomic_run / "pet-h-fci-k3.pt")
    xml = (EXAMPLES / "nvt_metatomic.xml").read_text()
    assert "<pes>metatomic</pes>" in xml
    exported_potentials = _ipi_potentials(metatomic_run, xml, 4, monkeypatch)
    # the same input with the ase-bodyorder PES in place of i-PI's metatomic one
    plugin = importlib.util.find_spec("ase_bodyorder.ipi_bodyorder").origin
    forcefield = (
        f"<ffdirect name='truncated' pbc='false'><pes>custom</pes><pes_path>{plugin}</pes_path>"
        "<parameters>{model: pet-h-fci, template: h16.xyz, max_order: 3}</parameters></ffdirect>"
    )
    xml = re.sub(r"<ffdirect.*?</ffdirect>", forcefield, xml, flags=re.DOTALL)
    plugin_potentials = _ipi_potentials(plugin_run, xml, 4, monkeypatch)
    assert len(exported_potentials) == 5
    assert np.abs(exported_potentials - plugin_potentials).max() < 1e-8


def test_the_export_command(tmp_path, capsys):
    """ase-bodyorder export writes the file, says what it holds (as info does), and
    refuses with exit 2 what cannot be exported, writing nothing."""
    from metatomic_ase import MetatomicCalculator

    from ase_bodyorder.cli import main

    output = tmp_path / "pet-k2.pt"
    assert main(["export", "pet-h-fci", "-K", "2", "-o", str(output)]) == 0
    said = capsys.readouterr().out
    assert "body order K: 2" in said and "ase-bodyorder::dE_2" in said
    assert main(["info", str(output)]) == 0
    assert capsys.readouterr().out == said
    atoms = finite(4)
    atoms.calc = MetatomicCalculator(str(output))
    ours = BodyOrderCalculator("pet-h-fci", 2)
    assert abs(atoms.get_potential_energy() - ours.get_potential_energy(atoms.copy())) < TOLERANCE
    for arguments, message in (
        (["export", "pet-h-fci", "-K", "2", "-o", str(output)], "exists: pass --overwrite"),
        (["export", "pet-h-fci", "-K", "5", "-o", str(tmp_path / "k5.pt")], "body orders 1 to 4"),
        (["export", "sevennet-0", "-K", "2", "-o", str(tmp_path / "s.pt")], "cannot be exported"),
        (["export", "missing.pt", "-K", "2", "-o", str(tmp_path / "m.pt")], "does not exist"),
        (["export", "pet-h-fci", "-K", "2", "-o", str(tmp_path)], "is a folder"),
        (["info", str(tmp_path)], "is not a file"),
    ):
        assert main(arguments) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pet-k2.pt"]
    from ase_bodyorder.models import resolve_model

    assert main(["info", str(resolve_model("pet-h-fci"))]) == 0  # a shipped model: its card too
    assert "card pet-h-fci.json: PET" in capsys.readouterr().out

"""Explicitly body-ordered linear models (ase_bodyorder.linear): the engine proves their
body order (dE_k = 0 beyond K, finite and periodic), a fit to a pair potential recovers
it, and bad input is refused in one line."""

from __future__ import annotations

import json

import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.morse import MorsePotential
from ase.calculators.singlepoint import SinglePointCalculator

from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.cli import main
from ase_bodyorder.errors import BodyOrderWarning, InputError

from ase_bodyorder.linear.fit import fit_linear_model

ROOT_DATA = __import__("pathlib").Path(__file__).resolve().parent.parent / "data" / "fci_h_clusters.extxyz"


def _clusters(count: int, seed: int, sizes=(3, 4, 5, 6), box: float = 3.4, species: str = "H") -> list:
    """Random clusters, no two atoms closer than 1.1 A."""
    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < count:
        n = int(rng.choice(sizes))
        positions = rng.uniform(0, box, (n, 3))
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)[np.triu_indices(n, 1)]
        if distances.min() > 1.1:
            frames.append(ase.Atoms(species * n, positions=positions))
    return frames


def _labelled(frames, calculator) -> list:
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calculator
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        out.append(atoms)
    return out


def _morse():
    """A smooth pair potential, zero beyond 3.9 A: body order exactly 2."""
    return MorsePotential(epsilon=1.0, rho0=4.0, r0=1.4, rcut1=3.0, rcut2=3.9)


@pytest.fixture(scope="module")
def fci_subset(tmp_path_factory):
    """60 clusters of the shipped FCI pool (energies and forces)."""
    path = tmp_path_factory.mktemp("data") / "fci60.extxyz"
    ase.io.write(path, ase.io.read(ROOT_DATA, "1000:1060"))
    return path


@pytest.mark.parametrize("order", [2, 3, 4])
def test_the_engine_proves_the_body_order(fci_subset, tmp_path, order):
    model = tmp_path / f"k{order}.pt"
    fit_linear_model(fci_subset, order, model, batch_size=30)
    finite = _clusters(1, 7, sizes=(6,))[0]
    # a cell a little wider than the cutoff: images of an atom join its subclusters
    periodic = ase.Atoms("H2", positions=[[0.1, 0.2, 0.3], [1.0, 0.9, 0.2]],
                         cell=[[4.3, 0, 0], [0.3, 4.4, 0], [0, 0.2, 4.6]], pbc=True)
    for atoms, top in ((finite, 6), (periodic, order + 1)):
        atoms.calc = BodyOrderCalculator(model, top)
        atoms.get_potential_energy()
        beyond = atoms.calc.results["body_order_energies"][order:]
        assert np.abs(beyond).max() < 1e-8, (order, atoms.pbc.any(), beyond)
        assert abs(atoms.calc.results["body_order_energies"][order - 1]) > 1e-3  # order K itself is there
    # every order up to N: the plain model
    finite.calc = BodyOrderCalculator(model, 6)
    assert abs(finite.get_potential_energy() - BodyOrderCalculator(model).get_potential_energy(finite.copy())) < 1e-9


def test_a_fit_to_a_pair_potential_recovers_it(tmp_path):
    data = tmp_path / "morse.extxyz"
    ase.io.write(data, _labelled(_clusters(150, 1), _morse()))
    model = tmp_path / "morse-k2.pt"
    result = fit_linear_model(data, 2, model)
    assert result.errors["validation"]["H"]["energy_meV_per_atom"] < 5.0
    # unseen clusters: the fitted pair energies against the potential's
    test = _clusters(20, 2)
    truth = np.array([_labelled([a], _morse())[0].get_potential_energy() for a in test])
    fitted = np.array([BodyOrderCalculator(model).get_potential_energy(a.copy()) for a in test])
    rmse = np.sqrt(np.mean(((fitted - truth) / [len(a) for a in test]) ** 2))
    print(f"linear K = 2 fitted to a Morse pair potential: {1000 * rmse:.3f} meV/atom on unseen clusters")
    assert rmse < 5e-3
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["max_order"] == 2 and card["species"] == ["H"] and card["errors"]["train"]["H"]["structures"] > 100


def test_bad_input_is_refused_in_one_line(tmp_path, fci_subset):
    no_energy = tmp_path / "plain.xyz"
    ase.io.write(no_energy, _clusters(2, 3), format="xyz")
    with pytest.raises(InputError, match="frame 0 of .*plain.xyz' has no energy"):
        fit_linear_model(no_energy, 2, tmp_path / "m.pt")
    for order in (1, 5, 2.0, True):
        with pytest.raises(InputError, match="body order K must be 2, 3 or 4"):
            fit_linear_model(fci_subset, order, tmp_path / "m.pt")
    existing = tmp_path / "exists.pt"
    existing.write_text("mine")
    with pytest.raises(InputError, match="exists: pass overwrite=True"):
        fit_linear_model(fci_subset, 2, existing)
    assert existing.read_text() == "mine"
    # a species the model was not fitted on, at evaluation
    model = tmp_path / "h.pt"
    fit_linear_model(fci_subset, 2, model, batch_size=30)
    carbon = ase.Atoms("CH", positions=[[0, 0, 0], [0, 0, 1.1]])
    with pytest.raises(ValueError, match=r"species \['C'\] .* not known"):
        BodyOrderCalculator(model, 2).get_potential_energy(carbon)


def test_the_fit_command(tmp_path, fci_subset, capsys):
    model = tmp_path / "k3.pt"
    assert main(["fit", str(fci_subset), "-K", "3", "-o", str(model), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "linear model, K = 3" in out and "train" in out and "validation" in out and model.exists()
    assert main(["fit", str(fci_subset), "-K", "3", "-o", str(model)]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert main(["fit", str(fci_subset), "-K", "5", "-o", str(tmp_path / "k5.pt")]) == 2
    assert main(["decompose", str(fci_subset), "--model", str(model), "-K", "4", "--format", "json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert max(abs(row["body_order_energies"][3]) for row in rows if row["n_atoms"] >= 4) < 1e-8
    # energies alone: no force rows, and the card says so
    assert main(["fit", str(fci_subset), "-K", "2", "-o", str(tmp_path / "e.pt"), "--energies-only", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "nan" not in out  # no force rows: shown as -
    card = json.loads((tmp_path / "e.json").read_text())
    assert card["fitted_to"] == "energies" and json.loads((tmp_path / "k3.json").read_text())["fitted_to"] == "energies and forces"
    assert np.isnan(card["errors"]["train"]["H"]["force_eV_per_A"])


def test_bad_settings_of_the_fit_are_refused_before_any_work(fci_subset, tmp_path, capsys):
    for cutoff in (-1.0, 0.0, 0.3, float("nan")):
        with pytest.raises(InputError, match="cutoff must be a distance in A larger than"):
            fit_linear_model(fci_subset, 2, tmp_path / "m.pt", cutoff=cutoff)
    with pytest.raises(InputError, match="no validation structures"):
        fit_linear_model(fci_subset, 2, tmp_path / "m.pt", validation_fraction=0.0)
    result = fit_linear_model(fci_subset, 2, None, validation_fraction=0.0, regularisation=1e-6)
    assert result.regularisation == 1e-6 and result.errors["validation"] == {}
    assert main(["fit", str(fci_subset), "-K", "2", "-o", str(tmp_path / "m.pt"), "--cutoff", "0"]) == 2
    assert "larger than the 0.5 A smoothing" in capsys.readouterr().err
    assert main(["fit", str(fci_subset), "-K", "2", "-o", str(tmp_path / "m.pt"), "--validation", "0"]) == 2
    assert "give --regularisation" in capsys.readouterr().err
    assert main(["fit", str(fci_subset), "-K", "2", "-o", str(tmp_path / "m.pt"), "--validation", "1.5"]) == 2
    assert "--validation must be a fraction in [0, 1)" in capsys.readouterr().err


def test_a_fit_beyond_the_data_s_bodies_says_so(tmp_path):
    dimers = tmp_path / "dimers.extxyz"
    ase.io.write(dimers, [a for a in ase.io.read(ROOT_DATA, ":400") if len(a) == 2][:40])
    with pytest.warns(BodyOrderWarning, match="K = 3 but no training structure has more than 2 atoms"):
        fit_linear_model(dimers, 3, None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", BodyOrderWarning)
        fit_linear_model(dimers, 2, None)
    with pytest.warns(BodyOrderWarning, match="training data given more than once"):
        fit_linear_model([dimers, dimers], 2, None)

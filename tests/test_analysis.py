"""Dimer and trimer curves, convergence with K, against potentials of known terms."""

from __future__ import annotations

import ase
import numpy as np
from conftest import CUTOFF, SPECIES, lines_by_label

from ase_bodyorder.analysis import convergence, dimer_curve, trimer_curve
from ase_bodyorder.cli import main
from ase_bodyorder.reference import ReferenceBackend, ReferencePotential, evaluate_periodic


def test_dimer_curve_is_the_pair_term(explicit_potential):
    distances = np.linspace(0.8, 3.5, 12)
    curve = dimer_curve(ReferenceBackend(explicit_potential), ("C", "O"), distances)
    pair = ReferencePotential(SPECIES, ["pair"], cutoff=CUTOFF)
    for d, e in zip(distances, curve.energy):
        atoms = ase.Atoms("CO", positions=[[0, 0, 0], [0, 0, d]])
        assert abs(e - evaluate_periodic(pair, atoms, False, False)["energy"]) < 1e-12
    assert curve.energy[-1] == 0.0  # beyond the cutoff


def test_trimer_curve_is_the_triple_term(explicit_potential, many_body_potential):
    distances = np.linspace(0.9, 3.2, 8)
    curve = trimer_curve(ReferenceBackend(explicit_potential), ("H", "H", "H"), distances)
    triple = ReferencePotential(SPECIES, ["triple"], cutoff=CUTOFF)
    for r, e in zip(distances, curve.energy):
        atoms = ase.Atoms("H3", positions=np.array([[0, 0, 0], [1, 0, 0], [0.5, np.sqrt(3) / 2, 0]]) * r)
        assert abs(e - evaluate_periodic(triple, atoms, False, False)["energy"]) < 1e-12
    # a pair-only potential has no three-body energy at all
    pair_only = ReferencePotential(SPECIES, ["one", "pair"], cutoff=CUTOFF)
    assert np.abs(trimer_curve(ReferenceBackend(pair_only), ("H",) * 3, distances).energy).max() < 1e-12
    # and an every-order one does
    assert np.abs(trimer_curve(ReferenceBackend(many_body_potential), ("H",) * 3, distances).energy).max() > 1e-3


def test_convergence_reaches_the_plain_model(many_body_potential):
    atoms = ase.Atoms("C2O2H", positions=np.random.default_rng(0).uniform(0, 2.5, (5, 3)))
    result = convergence(atoms, ReferenceBackend(many_body_potential), 5)
    assert abs(result["truncated_energies"][-1] - result["full_energy"]) < 1e-10


def test_curves_command(exported_models, tmp_path, capsys, saved_figures):
    assert main(["curves", "--model", str(exported_models["full"]), "--species", "H", "--points", "5",
                 "-o", str(tmp_path / "curves.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    label = str(exported_models["full"])
    assert lines[0] == f"distance_A,{label}:dimer_eV,{label}:trimer_eV" and len(lines) == 6
    assert (tmp_path / "curves.png").stat().st_size > 5000
    (figure,) = saved_figures
    assert [ax.get_title() for ax in figure.axes] == ["H-H dimer", "H-H-H trimer"]
    rows = np.array([line.split(",") for line in lines[1:]], dtype=float)
    for ax, column in zip(figure.axes, (1, 2)):
        distance, energy = lines_by_label(ax)[label].get_data()
        np.testing.assert_allclose(distance, rows[:, 0], atol=1e-4)
        np.testing.assert_allclose(energy, rows[:, column], atol=1e-7)

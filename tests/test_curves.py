"""Dimer and trimer curves of several models beside a reference; the LAMMPS table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ase_bodyorder.analysis import (
    dimer_curve,
    read_lammps_table,
    reference_curve,
    trimer_curve,
    write_lammps_table,
)
from ase_bodyorder.cli import main
from ase_bodyorder.errors import UnphysicalCurveWarning
from ase_bodyorder.reference import ReferenceBackend, ReferencePotential
from conftest import lines_by_label


@pytest.fixture(scope="module")
def pair_potential():
    return ReferenceBackend(ReferencePotential([1, 6], ["one", "pair", "triple"], cutoff=4.0))


def test_lammps_table_reads_back_and_interpolates(pair_potential, tmp_path):
    distances = np.linspace(0.8, 3.9, 400)
    curve = dimer_curve(pair_potential, ("C", "H"), distances)
    path = tmp_path / "ch.table"
    write_lammps_table(curve, path)
    table = read_lammps_table(path, "C_H_EPS2")
    assert np.allclose(table.distance, distances) and np.allclose(table.energy, curve.energy, atol=1e-10)
    # between grid points, linear interpolation (LAMMPS 'table linear') is close to the model
    middle = 0.5 * (distances[1:] + distances[:-1])
    direct = dimer_curve(pair_potential, ("C", "H"), middle)
    assert np.abs(np.interp(middle, table.distance, table.energy) - direct.energy).max() < 2e-3
    # the forces are -d eps/dr: against a central difference of the energies
    step = 1e-5
    plus = dimer_curve(pair_potential, ("C", "H"), middle + step).energy
    minus = dimer_curve(pair_potential, ("C", "H"), middle - step).energy
    assert np.abs(-(plus - minus) / (2 * step) - direct.force).max() < 1e-5
    with pytest.raises(FileExistsError):
        write_lammps_table(curve, path)  # never overwritten
    with pytest.raises(ValueError, match="dimer curve"):
        write_lammps_table(trimer_curve(pair_potential, ("C", "C", "H"), distances[:5]), tmp_path / "x")


def _reference_file(folder, distances, energies):
    data = {"H-H": {"distance_A": list(distances), "binding_energy_eV": list(energies)},
            "method": {"xc": "test", "basis": "none"}}
    path = folder / "ref.json"
    path.write_text(json.dumps(data))
    return path


def test_curves_command_with_models_and_a_reference(tmp_path, capsys, saved_figures):
    distances = np.linspace(0.6, 3.0, 7)
    path = _reference_file(tmp_path, distances, -np.exp(-distances))
    arguments = ["curves", "--model", "default", "--model", "soap-bpnn-h-fci", "--reference", str(path),
                 "--kind", "dimer", "-o", str(tmp_path / "c.png"), "--lammps-table", str(tmp_path / "hh.table")]
    assert main(arguments) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = lines[0].split(",")
    assert header == ["distance_A", "default:dimer_eV", "soap-bpnn-h-fci:dimer_eV", "ref (reference):dimer_eV"]
    rows = np.array([line.split(",") for line in lines[1:]], dtype=float)
    assert np.allclose(rows[:, 0], distances, atol=1e-4)  # the models at the reference's points
    assert np.allclose(rows[:, 3], -np.exp(-distances))
    expected = dimer_curve("default", ("H", "H"), distances).energy
    assert np.allclose(rows[:, 1], expected, atol=1e-7)
    assert (tmp_path / "c.png").stat().st_size > 10_000 and (tmp_path / "hh.table").exists()
    (ax,) = saved_figures[0].axes  # one panel: the H-H dimer, the reference dashed
    lines = lines_by_label(ax)
    assert set(lines) == {"default", "soap-bpnn-h-fci", "ref (reference)"}
    assert lines["ref (reference)"].get_linestyle() == "--" and lines["default"].get_linestyle() == "-"
    np.testing.assert_allclose(lines["default"].get_ydata(), expected, atol=1e-7)
    assert main(arguments) == 2  # existing outputs are not replaced without --overwrite
    assert "exists" in capsys.readouterr().err


def test_reference_errors(tmp_path):
    path = _reference_file(tmp_path, [1.0, 2.0], [-1.0, 0.0])
    with pytest.raises(ValueError, match=r"no C-C curve; it has: H-H"):
        reference_curve(str(path), ("C", "C"))
    with pytest.raises(FileNotFoundError, match=r"neither a shipped reference \(pbe\) nor a file"):
        reference_curve("nowhere.json", ("H", "H"))
    broken = {
        '{"H-H": {"distance_A": [1, 2]}}': "entry must be",
        '{"H-H": {"distance_A": [1, 2, 3], "binding_energy_eV": [0, 1]}}': "as many energies as distances",
        '{"H-H": {"distance_A": [1], "binding_energy_eV": [0]}}': "at least two points",
        '{"H-H": {"distance_A": [1, 1], "binding_energy_eV": [0, 1]}}': "positive and distinct",
        '{"H-H": {"distance_A": ["a", 1], "binding_energy_eV": [0, 1]}}': "lists of numbers",
        "[1, 2, 3]": "must be a JSON object",
        '{"H-H": ': "is not a JSON file",
    }
    for text, message in broken.items():
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            reference_curve(str(path), ("H", "H"))
    # points in any order come back sorted; names of shipped ones in any case
    _reference_file(tmp_path, [2.0, 1.0, 3.0], [-0.5, -1.0, 0.0])
    curve = reference_curve(str(tmp_path / "ref.json"), ("H", "H"))
    assert curve.reference and curve.distance.tolist() == [1, 2, 3] and curve.energy.tolist() == [-1, -0.5, 0]
    assert reference_curve("PBE", ("H", "H")).label == "PBE (reference)"


def test_curves_refuses_before_any_model_runs(tmp_path, capsys, monkeypatch):
    """Every mistake that can be seen from the command line is refused up front, as
    one line (the models are never evaluated: dimer_curve would fail the test)."""
    import ase_bodyorder.analysis

    def must_not_run(*args, **kwargs):
        raise AssertionError("a curve was computed")

    monkeypatch.setattr(ase_bodyorder.analysis, "dimer_curve", must_not_run)
    monkeypatch.setattr(ase_bodyorder.analysis, "trimer_curve", must_not_run)
    (tmp_path / "mine.py").write_text("x = undefined_name\n")
    (tmp_path / "plain.py").write_text(
        "from ase.calculators.lj import LennardJones\nnumber = 3\ncalculator = LennardJones()\n")
    monkeypatch.chdir(tmp_path)
    _reference_file(tmp_path, [1.0, 2.0], [-1.0, 0.0])
    cases = {
        ("--model", "default", "--species", "C"): "--model default: species ['C']",
        ("--kind", "trimer", "--lammps-table", "t.table"): "--lammps-table writes a dimer",
        ("-o", "nowhere/p.png"): "folder 'nowhere' for the figure does not exist",
        ("-o", "p.txt"): "must end in .png, .pdf or .svg",
        ("--lammps-table", "nowhere/t.table"): "folder 'nowhere' for the LAMMPS table",
        ("--reference", "mine.py"): "give the calculator in the file too, as mine.py:NAME",
        ("--reference", "mine.py:make"): "importing mine.py failed: NameError",
        ("--reference", "plain.py:missing"): "plain.py has no missing",
        ("--reference", "plain.py:number"): "number is an object of type int",
        ("--reference", "pbe", "--kind", "trimer"): "a trimer needs a reference calculator",
        ("--reference", "ref.json", "--points", "5"): "the reference curve brings its own 2",
        ("--reference", "nothere.json"): "--reference: reference 'nothere.json' is neither",
        ("--max", "0.4"): "got --min 0.5 (its default), --max 0.4",
    }
    for arguments, message in cases.items():
        assert main(["curves", *arguments]) == 2, arguments
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (arguments, err)


def test_a_calculator_made_in_the_file_is_taken_as_it_is(tmp_path, capsys, monkeypatch):
    (tmp_path / "helpers.py").write_text("SIGMA = 0.9\n")
    (tmp_path / "plain.py").write_text(  # imports a file next to it, as `python plain.py` could
        "from ase.calculators.lj import LennardJones\nfrom helpers import SIGMA\n"
        "calculator = LennardJones(sigma=SIGMA, rc=4.0)\n")
    assert main(["curves", "--reference", f"{tmp_path / 'plain.py'}:calculator", "--kind", "dimer",
                 "--min", "1", "--max", "2", "--points", "3"]) == 0
    rows = np.array([line.split(",") for line in capsys.readouterr().out.strip().splitlines()[1:]], dtype=float)
    lj = lambda x: 4 * ((0.9 / x) ** 12 - (0.9 / x) ** 6)  # noqa: E731
    np.testing.assert_allclose(rows[:, 2], lj(rows[:, 0]) - lj(4.0), rtol=0, atol=1e-7)


def test_an_uneven_grid_is_written_without_lammps_r_keyword(pair_potential, tmp_path):
    """'R lo hi' makes LAMMPS space the points evenly and ignore the file's distances:
    written only for even grids (a reference curve's grid is not)."""
    even = dimer_curve(pair_potential, ("C", "H"), np.linspace(1.0, 3.0, 5))
    uneven = dimer_curve(pair_potential, ("C", "H"), np.array([1.0, 1.1, 1.3, 2.0, 3.0]))
    # this pair potential is attractive all the way in: no repulsive wall, said each time
    with pytest.warns(UnphysicalCurveWarning, match="C-H table"):
        write_lammps_table(even, tmp_path / "even.table")
    with pytest.warns(UnphysicalCurveWarning, match="C-H table"):
        write_lammps_table(uneven, tmp_path / "uneven.table")
    assert "N 5 R 1 3" in (tmp_path / "even.table").read_text()
    text = (tmp_path / "uneven.table").read_text()
    assert "\nN 5\n" in text and " R " not in text
    assert np.allclose(read_lammps_table(tmp_path / "uneven.table").distance, uneven.distance)


@pytest.mark.parametrize("arguments, message", [
    (["--species", "Xx"], "--species takes element symbols (e.g. H, C, Si), got ['Xx']"),
    (["--species", "si"], "got ['si']"),
    (["--species", "H", "H", "H", "--kind", "dimer"], "--kind dimer takes at most 2 species (the pair), got 3"),
])
def test_curves_species_are_checked_before_any_model_loads(arguments, message, capsys):
    assert main(["curves", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_curves_with_a_reference_calculator(tmp_path, capsys):
    """An ASE calculator as the reference: its dimer and trimer curves, computed like the
    models'. Lennard-Jones is a pair potential: eps_2 is its pair term, eps_3 is zero."""
    arguments = ["curves", "--model", "default", "--reference", "ase.calculators.lj:LennardJones",
                 "--species", "H", "--min", "0.9", "--max", "2.5", "--points", "5", "-o", str(tmp_path / "c.png")]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "-0.00000000" not in out  # round-off has no sign
    lines = out.strip().splitlines()
    label = "ase.calculators.lj:LennardJones (reference)"
    assert lines[0].split(",") == ["distance_A", "default:dimer_eV", "default:trimer_eV",
                                   f"{label}:dimer_eV", f"{label}:trimer_eV"]
    rows = np.array([line.split(",") for line in lines[1:]], dtype=float)
    r = np.linspace(0.9, 2.5, 5)
    lj = lambda x: 4 * (x**-12 - x**-6)  # noqa: E731 (sigma = epsilon = 1, shifted to 0 at rc = 3)
    np.testing.assert_allclose(rows[:, 3], lj(r) - lj(3.0), rtol=0, atol=1e-7)
    np.testing.assert_allclose(rows[:, 4], 0.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(rows[:, 1], dimer_curve("default", ("H", "H"), r).energy, rtol=0, atol=1e-7)
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_a_reference_calculator_that_fails_is_named(tmp_path, capsys):
    (tmp_path / "mine.py").write_text(
        "from ase.calculators.lj import LennardJones\n"
        "class PairsOnly(LennardJones):\n"
        "    def calculate(self, atoms=None, properties=None, system_changes=None):\n"
        "        if len(atoms) > 2:\n"
        "            raise ValueError('only pairs')\n"
        "        super().calculate(atoms, properties, system_changes)\n"
    )
    arguments = ["curves", "--reference", f"{tmp_path / 'mine.py'}:PairsOnly", "--points", "3"]
    assert main(arguments + ["--kind", "dimer"]) == 0
    capsys.readouterr()
    assert main(arguments + ["--kind", "both"]) == 2
    err = capsys.readouterr().err
    assert "failed on the H-H-H trimer between 0.5 and 5 A: ValueError: only pairs" in err
    assert main(["curves", "--reference", "nonsense"]) == 2
    assert "'pbe', FILE.json, 'fci', MODULE:NAME or FILE.py:NAME" in capsys.readouterr().err

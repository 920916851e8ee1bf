"""Write h16.xyz: eight H2 molecules (0.74 A) on a slightly perturbed 3 A grid."""

import ase
import ase.io
import numpy as np

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
atoms.center()
atoms.info["comment"] = "8 H2 molecules on a 3 A grid (examples/make_h16.py)"
ase.io.write("h16.xyz", atoms)

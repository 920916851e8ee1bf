"""ASE molecular dynamics with the truncated calculator conserves energy."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
from conftest import random_cluster

from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.reference import ReferenceBackend


@pytest.mark.parametrize("order", [2, 3])
def test_nve_conserves_energy(many_body_potential, order):
    """Must-show 7: VelocityVerlet NVE; eps(S) vanishes smoothly as S disconnects."""
    atoms = random_cluster(10, 0.05, 3, species=[6, 8], min_distance=1.1)
    atoms.calc = BodyOrderCalculator(ReferenceBackend(many_body_potential), order)
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    Stationary(atoms)
    timestep = 0.5  # fs
    dyn = VelocityVerlet(atoms, timestep * units.fs)
    energies, counts = [], set()

    def record():
        energies.append(atoms.get_total_energy())
        counts.add(tuple(atoms.calc.results["subcluster_counts"]))

    dyn.attach(record, interval=1)
    dyn.run(400)
    energies = np.array(energies)
    duration_ps = 400 * timestep / 1000
    drift = abs(np.polyfit(np.arange(len(energies)) * timestep / 1000, energies, 1)[0]) / len(atoms)
    fluctuation = energies.std() / len(atoms)
    print(f"K={order}: drift {drift:.2e} eV/atom/ps, fluctuation {fluctuation:.2e} eV/atom")
    # the trajectory really changed the graph (subsets (dis)connected during the run)
    assert len(counts) > 1
    assert drift < 1e-3
    assert fluctuation < 1e-3
    assert abs(energies[-1] - energies[0]) / len(atoms) < 5e-3 * duration_ps / 0.2

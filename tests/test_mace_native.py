"""A native MACE model file reaches packed evaluation through metatrain
(training/mace/export_native.sh), equal to mace-torch's own calculator on every
subcluster. Runs where mace-torch and metatrain are installed (the MACE environment of
training/mace/README); skipped elsewhere, as in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import ase
import numpy as np
import pytest

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # e3nn 0.4.4 loads its constants with pickle
mace = pytest.importorskip("mace")
pytest.importorskip("metatrain")

SCRIPT = Path(__file__).resolve().parent.parent / "training" / "mace" / "export_native.sh"


def _native_model(path: Path) -> None:
    import torch
    from e3nn import o3
    from mace import modules

    torch.set_default_dtype(torch.float64)
    model = modules.MACE(
        r_max=4.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=2,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=1, hidden_irreps=o3.Irreps("8x0e + 8x1o"), MLP_irreps=o3.Irreps("8x0e"),
        atomic_energies=np.array([-13.6]), avg_num_neighbors=4.0, atomic_numbers=[1], correlation=2,
        gate=torch.nn.functional.silu,
    )
    torch.save(model, path)


def test_a_native_mace_file_runs_packed(tmp_path):
    from mace.calculators import MACECalculator

    from ase_bodyorder.mbe import evaluate_subclusters, plan_subclusters

    assert shutil.which("mtt"), "metatrain's mtt must be on PATH"
    _native_model(tmp_path / "native.model")
    subprocess.run([str(SCRIPT), str(tmp_path / "native.model"), str(tmp_path / "native.pt")], check=True)
    atoms = ase.Atoms("H6", positions=np.random.default_rng(0).uniform(0, 3, (6, 3)))
    subclusters = plan_subclusters(atoms, 3, 4.0)
    packed = evaluate_subclusters(subclusters, tmp_path / "native.pt", forces=True)
    own = MACECalculator(model_paths=str(tmp_path / "native.model"), device="cpu", default_dtype="float64")
    energies, forces = [], []
    for cluster in subclusters:
        cluster.calc = own
        energies.append(cluster.get_potential_energy())
        forces.append(cluster.get_forces())
    np.testing.assert_allclose(packed["energies"], energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(packed["forces"], np.concatenate(forces), rtol=0, atol=1e-10)

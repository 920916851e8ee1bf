"""The shipped hydrogen models: load offline, finite, as accurate as their cards say,
and the packed body-order evaluation agrees with one subcluster at a time."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from conftest import inclusion_exclusion, random_cluster

from ase_bodyorder import BodyOrderCalculator, default_model, list_models
from ase_bodyorder.backends.metatomic import load_model
from ase_bodyorder.models import DEFAULT_MODEL, model_card, resolve_model

TEST_SPLIT = Path(__file__).parent / "data" / "fci_test_split.extxyz"
MODELS = list_models()


def test_default_model_is_shipped():
    assert DEFAULT_MODEL in MODELS
    assert default_model().exists()
    assert resolve_model("default") == default_model()
    assert default_model().stat().st_size < 6 * 1024 * 1024


@pytest.mark.parametrize("name", MODELS)
def test_loads_offline_and_is_finite(name, tmp_path):
    # a fresh interpreter whose proxies point nowhere: any download attempt would fail
    code = (
        "import numpy as np, ase; from ase_bodyorder import BodyOrderCalculator;"
        f"a = ase.Atoms('H4', positions=np.random.default_rng(0).uniform(0, 2, (4, 3)));"
        f"a.calc = BodyOrderCalculator('{name}', None);"
        "e = a.get_potential_energy(); f = a.get_forces();"
        "assert np.isfinite(e) and np.isfinite(f).all(); print(e)"
    )
    env = dict(os.environ, HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("name", MODELS)
def test_card_describes_the_file(name):
    card = model_card(name)
    path = resolve_model(name)
    import hashlib

    assert card["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for key in ("data", "dtype", "cutoff_A", "errors_on_test_split"):
        assert key in card
    model = load_model(path)
    assert card["dtype"] == model.capabilities().dtype
    assert card["cutoff_A"] == max(o.engine_cutoff("angstrom") for o in model.requested_neighbor_lists())


@pytest.mark.parametrize("name", MODELS)
def test_errors_on_the_committed_test_split_match_the_card(name):
    """Recomputed with metatomic's own calculator, independently of the card script."""
    from metatomic_ase import MetatomicCalculator

    frames = ase.io.read(TEST_SPLIT, ":")
    calculator = MetatomicCalculator(load_model(resolve_model(name)))
    card = model_card(name)["errors_on_test_split"]
    for density in ("low", "high"):
        chosen = [a for a in frames if a.info["set"] == f"cluster_{density}"]
        results = calculator.compute_energy(chosen, compute_forces_and_stresses=True)
        de = np.array([(e - a.get_potential_energy()) / len(a) for e, a in zip(results["energy"], chosen)])
        df = np.concatenate([(f - a.get_forces()).ravel() for f, a in zip(results["forces"], chosen)])
        energy_rmse = 1000 * np.sqrt(np.mean(de**2))
        force_rmse = np.sqrt(np.mean(df**2))
        assert len(chosen) == card[density]["n_structures"]
        assert abs(energy_rmse - card[density]["energy_rmse_meV_per_atom"]) < 1e-6 * max(1, energy_rmse)
        assert abs(force_rmse - card[density]["force_rmse_eV_per_A"]) < 1e-6 * max(1, force_rmse)
        spread = np.std([a.get_potential_energy() / len(a) for a in chosen]) * 1000
        if "max_order" not in model_card(name):
            # a trained model, not a constant: errors well below the spread of the data
            assert energy_rmse < 0.2 * spread
        else:
            # an explicit model of body order K < 8 cannot reach that: the clusters'
            # energies need more bodies (test_linear_models_improve_with_their_body_order)
            assert energy_rmse < 1.5 * spread


def test_linear_models_improve_with_their_body_order():
    """The shipped linear models, K = 2, 3, 4, fitted to the same data: each order
    added lowers the test error at both densities (docs/linear.md)."""
    names = [f"linear-h-fci-k{K}" for K in (2, 3, 4)]
    if not set(names) <= set(MODELS):
        pytest.fail(f"the shipped linear models {names} are missing")
    for density in ("low", "high"):
        rmse = [model_card(name)["errors_on_test_split"][density]["energy_rmse_meV_per_atom"] for name in names]
        assert rmse[0] > rmse[1] > rmse[2], (density, rmse)


@pytest.mark.parametrize("name", MODELS)
def test_packed_body_order_equals_one_subcluster_at_a_time(name):
    from metatomic_ase import MetatomicCalculator

    n = 6
    atoms = random_cluster(n, 0.1, 3, species=[1], min_distance=0.7)
    single = MetatomicCalculator(load_model(resolve_model(name)))
    energies = {}
    for k in range(1, n + 1):
        for subset in itertools.combinations(range(n), k):
            energies[subset] = float(single.compute_energy(atoms[list(subset)])["energy"])
    for order in (2, 3):
        expected = inclusion_exclusion(energies, order)
        atoms.calc = BodyOrderCalculator(name, order)
        assert abs(atoms.get_potential_energy() - expected) < 1e-8


def test_models_command_lists_them(capsys):
    from ase_bodyorder.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert name in out
    assert "(default)" in out


def test_training_pipeline_smoke(tmp_path):
    """metatrain on ~20 FCI structures with every committed options file that
    training/pet/stages names (2 epochs, then 1 per fine-tune; a file that serves several
    stages runs once, at its first), laid out and chained as training/train.sh does (run
    directory: the stage's name, else its options file's stem; a fine-tune reads the
    previous run's checkpoint); then export: the retraining path works (skipped without
    the train extra)."""
    pytest.importorskip("metatrain")
    import yaml

    root = Path(__file__).parent.parent
    frames = ase.io.read(TEST_SPLIT, ":")[:24]
    splits = tmp_path / "splits"
    splits.mkdir()
    for split, chosen in (("train", frames[:20]), ("val", frames[20:22]), ("test", frames[22:])):
        ase.io.write(splits / f"{split}.extxyz", chosen)
    stages = [
        line.split()
        for line in (root / "training/pet/stages").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert stages and stages[0][0] == "options.yaml"
    run_names = [run_name[0] if run_name else Path(name).stem for name, _pool, *run_name in stages]
    assert len(set(run_names)) == len(run_names), f"two stages share a run directory: {run_names}"
    first_stage_of: dict[str, int] = {}  # each options file runs once, at its first stage
    for i, (name, *_) in enumerate(stages):
        first_stage_of.setdefault(name, i)
    runs: list[Path] = []
    for name, i in first_stage_of.items():
        options = yaml.safe_load((root / "training/pet" / name).read_text())
        assert ("finetune" in options["architecture"]["training"]) == (i > 0)
        options["architecture"]["training"].update(num_epochs=2 if i == 0 else 1, batch_size=8, log_interval=1)
        if runs:
            options["architecture"]["training"]["finetune"]["read_from"] = f"../{runs[-1].name}/model.ckpt"
        run = tmp_path / run_names[i]
        runs.append(run)
        shutil.copytree(splits, run / "splits")
        (run / "options.yaml").write_text(yaml.safe_dump(options))
        # writes model.pt (exported, as training/train.sh ships it) and model.ckpt
        subprocess.run(["mtt", "train", "options.yaml", "-o", "model.pt"], cwd=run, check=True,
                       capture_output=True, timeout=300)
    atoms = frames[0].copy()
    atoms.calc = BodyOrderCalculator(run / "model.pt", 2)
    assert np.isfinite(atoms.get_potential_energy())
    # a checkpoint rebuilt from the export (first run's as template) predicts what the export does
    rebuilt = subprocess.run(
        [sys.executable, root / "training/checkpoint_from_export.py", runs[0] / "model.ckpt", run / "model.pt",
         tmp_path / "rebuilt.ckpt"], capture_output=True, text=True, timeout=300,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "max |dE| 0.00e+00 eV" in rebuilt.stdout

"""MD with the truncated calculator: energy conservation under ASE, and the main job, MD
from the command line with a per-step H5MD many-body log."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import ase.io
from ase import units
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
import h5py
import numpy as np
import pytest
from conftest import lines_by_label, random_cluster

from ase_bodyorder import BodyOrderCalculator, decompose
from ase_bodyorder.cli import main
from ase_bodyorder.h5md import read_log
from ase_bodyorder.md import _thermalize  # ASE's Maxwell-Boltzmann momenta, old ASE or new
from ase_bodyorder.reference import ReferenceBackend
from ase_bodyorder.report import energy_drift


@pytest.mark.parametrize("order", [2, 3])
def test_nve_conserves_energy(many_body_potential, order):
    """Must-show 7: VelocityVerlet NVE; eps(S) vanishes smoothly as S disconnects."""
    atoms = random_cluster(10, 0.05, 3, species=[6, 8], min_distance=1.1)
    atoms.calc = BodyOrderCalculator(ReferenceBackend(many_body_potential), order)
    _thermalize(atoms, 600, np.random.default_rng(0))
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



@pytest.fixture
def structure(tmp_path):
    path = tmp_path / "cluster.xyz"
    ase.io.write(path, random_cluster(8, 0.05, 2, min_distance=1.0))
    return path


def _md(model, structure, log, *extra):
    return main(
        ["md", str(structure), "--model", str(model), "-K", "3", "--steps", "30", "--timestep", "0.5",
         "--temperature", "300", "--seed", "1", "--log", str(log), "--quiet", *extra]
    )


def test_command_line_run_read_by_mdanalysis(exported_models, structure, tmp_path):
    import MDAnalysis as mda

    log = tmp_path / "run.h5"
    assert _md(exported_models["full"], structure, log, "--per-atom", "--full-model-every", "10") == 0
    with h5py.File(log, "r") as f:
        positions = f["particles/all/position/value"][()]
        assert tuple(f["h5md"].attrs["version"]) == (1, 1)
        for name in ("body_order_energies", "truncated_energies", "subcluster_counts", "potential_energy"):
            assert "unit" in f[f"observables/{name}/value"].attrs
        assert f["observables/body_order_energies/value"].shape == (31, 3)
        assert f["observables/per_atom_body_order_energies/value"].shape == (31, 8, 3)
        full = f["observables/full_model_energy/value"][()]
        assert np.flatnonzero(np.isfinite(full)).tolist() == [0, 10, 20, 30]
        meta = f["parameters/ase_bodyorder"].attrs
        assert meta["max_order"] == 3 and len(meta["model_sha256"]) == 64
    universe = mda.Universe.empty(8, trajectory=True).load_new(str(log), format="H5MD")
    assert len(universe.trajectory) == 31
    for frame in (0, 17, 30):
        universe.trajectory[frame]
        assert np.allclose(universe.atoms.positions, positions[frame], atol=1e-5)
    assert np.allclose(universe.trajectory.ts.data["body_order_energies"], read_log(log).observable("body_order_energies")[30])


def test_logged_contributions_equal_a_fresh_decomposition(exported_models, structure, tmp_path):
    log = tmp_path / "run.h5"
    assert _md(exported_models["full"], structure, log, "--per-atom") == 0
    data = read_log(log)
    frames = data.frames()
    for f in (0, 12, 30):
        fresh = decompose(frames[f], exported_models["full"], 3)
        assert np.allclose(data.observable("body_order_energies")[f], fresh.body_order_energies, atol=1e-10)
        assert np.allclose(data.observable("per_atom_body_order_energies")[f], fresh.per_atom, atol=1e-10)
        assert abs(data.observable("potential_energy")[f] - fresh.truncated_energies[-1]) < 1e-10


def test_nve_conservation_read_back_from_the_log(exported_models, structure, tmp_path):
    log = tmp_path / "nve.h5"
    assert main(
        ["md", str(structure), "--model", str(exported_models["full"]), "-K", "2", "--steps", "200",
         "--timestep", "0.5", "--temperature", "300", "--seed", "3", "--log", str(log), "--quiet"]
    ) == 0
    data = read_log(log)
    total = data.observable("total_energy")
    assert len(total) == 201
    drift = energy_drift(data)
    print(f"NVE from the log: drift {drift:.2e} eV/atom/ps, spread {np.ptp(total) / 8:.2e} eV/atom")
    assert abs(drift) < 1e-3
    assert np.ptp(total) / 8 < 2e-3


def test_append_continues_and_nothing_is_overwritten(exported_models, structure, tmp_path, capsys):
    log = tmp_path / "run.h5"
    assert _md(exported_models["full"], structure, log) == 0
    digest = hashlib.sha256(log.read_bytes()).hexdigest()
    assert _md(exported_models["full"], structure, log) == 2
    assert "exists" in capsys.readouterr().err
    assert hashlib.sha256(log.read_bytes()).hexdigest() == digest
    capsys.readouterr()
    assert _md(exported_models["full"], structure, log, "--append") == 0
    err = capsys.readouterr().err
    assert f"note: continuing '{log}' from its last frame (step 30): positions and velocities come from the log" in err
    assert f"'{structure}' only supplied the species and their order" in err
    data = read_log(log)
    assert np.array_equal(data.step, np.arange(61))
    # both command lines are kept, the appended one last
    lines = data.metadata["command_lines"]
    assert len(lines) == 2 and "--append" not in lines[0] and lines[1][-1] == "--append"
    assert lines[0][:2] == ["ase-bodyorder", "md"] and data.metadata["command_line"] == lines[0]
    # the continued run starts from the last frame: positions move smoothly across it
    steps = np.abs(np.diff(data.positions[:31], axis=0)).max(axis=(1, 2))
    jump = np.abs(data.positions[31] - data.positions[30]).max()
    assert jump < 2 * steps.max()
    # a different K cannot be appended
    code = main(["md", str(structure), "--model", str(exported_models["full"]), "-K", "2", "--steps", "5",
                 "--log", str(log), "--append", "--quiet"])
    assert code != 0
    assert "max_order" in capsys.readouterr().err
    assert len(read_log(log).step) == 61


def test_sigkill_leaves_every_flushed_step(exported_models, structure, tmp_path):
    log = tmp_path / "killed.h5"
    command = [sys.executable, "-m", "ase_bodyorder.cli", "md", str(structure), "--model",
               str(exported_models["full"]), "-K", "2", "--steps", "100000", "--log", str(log),
               "--flush-every", "5", "--temperature", "300", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = 0
    try:
        deadline = time.time() + 120
        while time.time() < deadline and seen < 40:
            time.sleep(0.2)
            if log.exists():
                try:
                    seen = len(read_log(log).step)  # readable while being written
                except (OSError, ValueError, KeyError):
                    pass
        assert seen >= 40, process.stderr.read().decode() if process.poll() is not None else "too slow"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    data = read_log(log)
    assert len(data.step) >= seen
    assert np.array_equal(data.step, np.arange(len(data.step)))
    assert len(data.observable("body_order_energies")) >= seen
    import MDAnalysis as mda

    universe = mda.Universe.empty(len(data.numbers), trajectory=True).load_new(str(log), format="H5MD")
    assert len(universe.trajectory) >= seen


def test_decompose_command(exported_models, structure, tmp_path, capsys):
    many = tmp_path / "many.xyz"
    ase.io.write(many, [random_cluster(6, 0.05, s) for s in range(3)])
    assert main(["decompose", str(structure), str(many), "--model", str(exported_models["full"]), "-K", "3",
                 "--format", "csv", "--full-model", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("structure,n_atoms,dE_1/eV,dE_2/eV,dE_3/eV,E^(3)/eV,n_1,n_2,n_3,E_model/eV")
    assert len(lines) == 5
    assert main(["decompose", str(structure), "--model", str(exported_models["full"]), "-K", "2", "--format", "json"]) == 0
    import json

    record = json.loads(capsys.readouterr().out)[0]
    fresh = decompose(ase.io.read(structure), exported_models["full"], 2)
    assert np.allclose(record["body_order_energies"], fresh.body_order_energies)


def test_info_and_report(exported_models, structure, tmp_path, capsys, saved_figures):
    log = tmp_path / "run.h5"
    assert _md(exported_models["full"], structure, log, "--full-model-every", "5") == 0
    capsys.readouterr()
    assert main(["info", str(log)]) == 0
    text = capsys.readouterr().out
    assert "31 (steps 0..30" in text and "total-energy drift" in text and "eV/atom/ps" in text
    assert "command:" in text and "--full-model-every 5" in text
    assert main(["report", str(log), "-o", str(tmp_path / "report.png")]) == 0
    assert (tmp_path / "report.png").stat().st_size > 10_000
    (figure,) = saved_figures  # dE_2, dE_3 (time series and histograms), sizes, energy conservation
    assert "K = 3" in figure._suptitle.get_text() and "31 frames" in figure._suptitle.get_text()
    titles = [ax.get_title() for ax in figure.get_axes()]
    assert "size of each body order" in titles and any(t.startswith("energy conservation") for t in titles)
    sizes = next(ax for ax in figure.get_axes() if ax.get_title() == "size of each body order")
    assert "|plain model - $E^{(K)}$|" in lines_by_label(sizes)  # the --full-model-every remainder
    assert main(["report", str(log), "-o", str(tmp_path / "report.png")]) == 2  # no silent overwrite
    assert main(["report", str(log), "-o", str(tmp_path / "report.pdf")]) == 0


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "/nowhere/model.pt"], "does not exist"),
        (["--steps", "0"], "--steps must be a positive"),
        (["--steps", "-5"], "--steps must be a positive"),
        (["--log", "/nowhere/folder/run.h5"], "does not exist"),
        (["--ensemble", "langevin"], "needs --temperature"),
    ],
)
def test_md_bad_input(exported_models, structure, tmp_path, capsys, arguments, message):
    options = {"--model": str(exported_models["full"]), "--steps": "10", "--log": str(tmp_path / "a.h5")}
    flags = []
    for key, value in zip(arguments[::2], arguments[1::2]):
        options[key] = value
    for key, value in options.items():
        flags += [key, value]
    code = main(["md", str(structure), "-K", "2", "--quiet", *flags])
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a.h5").exists()


def test_md_unknown_species_and_bad_structure(exported_models, tmp_path, capsys):
    iron = tmp_path / "iron.xyz"
    ase.io.write(iron, ase.Atoms("Fe2", positions=[[0, 0, 0], [2, 0, 0]]))
    log = tmp_path / "a.h5"
    assert main(["md", str(iron), "--model", str(exported_models["full"]), "-K", "2", "--steps", "5", "--log", str(log), "--quiet"]) != 0
    assert "Fe" in capsys.readouterr().err
    assert not log.exists()  # a run that cannot start leaves no empty log behind
    broken = tmp_path / "broken.xyz"
    broken.write_text("3\nnot a structure\nH 0 0\n")
    assert main(["md", str(broken), "--model", str(exported_models["full"]), "-K", "2", "--steps", "5", "--log", str(log), "--quiet"]) == 2
    assert "could not read a structure" in capsys.readouterr().err
    assert main(["md", str(tmp_path / "missing.xyz"), "-K", "2", "--steps", "5", "--quiet"]) == 2


def test_console_script_help_and_version():
    out = subprocess.run(["ase-bodyorder", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ase-bodyorder ")
    out = subprocess.run(["ase-bodyorder", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("md", "decompose", "report", "info", "models"):
        assert command in out


def test_ctrl_c_closes_the_log_and_says_where(exported_models, structure, tmp_path):
    log = tmp_path / "interrupted.h5"
    command = [sys.executable, "-m", "ase_bodyorder.cli", "md", str(structure), "--model",
               str(exported_models["full"]), "-K", "2", "--steps", "100000", "--log", str(log),
               "--flush-every", "5", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.2)
            try:
                if len(read_log(log).step) >= 20:
                    break
            except (OSError, ValueError, KeyError):
                pass
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted: log" in err and "frames up to step" in err
    data = read_log(log)
    assert np.array_equal(data.step, np.arange(len(data.step)))
    last = int(err.split("up to step")[1].split()[0])
    assert last == data.step[-1]  # everything buffered was written on the way out


def test_md_with_molecules_as_bodies(exported_models, tmp_path):
    from ase.build import molecule

    atoms = molecule("H2O") + molecule("CH4")
    atoms.positions[3:] += [3.2, 0.0, 0.0]
    ase.io.write(tmp_path / "pair.xyz", atoms)
    log = tmp_path / "fragments.h5"
    assert main(["md", str(tmp_path / "pair.xyz"), "--model", str(exported_models["full"]), "-K", "2",
                 "--fragments", "molecules", "--steps", "5", "--log", str(log), "--quiet"]) == 0
    data = read_log(log)
    assert data.metadata["fragments"] == [[0, 1, 2], [3, 4, 5, 6, 7]]
    assert data.observable("subcluster_counts")[0].tolist() == [2, 1]


def test_first_ctrl_c_ends_the_run_after_a_whole_step(exported_models, tmp_path):
    from ase_bodyorder import BodyOrderCalculator
    from ase_bodyorder.md import run_md

    atoms = random_cluster(6, 0.05, 3, min_distance=1.0)
    calculator = BodyOrderCalculator(str(exported_models["full"]), 2)
    calculate, calls = calculator.calculate, []

    def calculate_then_interrupt(*args, **kwargs):
        calculate(*args, **kwargs)
        calls.append(1)
        if len(calls) == 8:  # the forces of step 7 (call 1 is the start-up evaluation)
            os.kill(os.getpid(), signal.SIGINT)

    calculator.calculate = calculate_then_interrupt
    previous = signal.getsignal(signal.SIGINT)
    result = run_md(atoms, calculator, steps=100, timestep_fs=0.5, log=tmp_path / "stop.h5", flush_every=3,
                    progress=False)
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back
    assert result.interrupted and result.steps_done == 7 and result.last_step == 7
    data = read_log(tmp_path / "stop.h5")
    assert data.step.tolist() == list(range(8))  # every step up to the stop, none half-written
    assert np.allclose(data.positions[-1], atoms.positions)


def test_a_runaway_is_reported_on_stderr(exported_models, tmp_path, capsys):
    atoms = random_cluster(8, 0.05, 2, min_distance=1.0)
    atoms.positions *= 0.45  # squeezed far inside the potential's repulsive wall
    ase.io.write(tmp_path / "squeezed.xyz", atoms)
    assert main(["md", str(tmp_path / "squeezed.xyz"), "--model", str(exported_models["full"]), "-K", "2",
                 "--steps", "30", "--timestep", "2", "--ensemble", "langevin", "--temperature", "100", "--seed", "1",
                 "--log", str(tmp_path / "hot.h5"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("ase-bodyorder md: warning: the temperature reached") == 1, err
    assert "--fragments molecules" in err

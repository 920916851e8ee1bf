"""A newcomer's report: clear errors, units, help, warnings, plots that can be read.

Everything here runs without a metatomic model (no torch): logs are written with
H5MDWriter, MD runs on ASE's Lennard-Jones through the ASE-calculator backend.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import json
import warnings

import ase
import ase.io
import h5py
import numpy as np
import pytest
from ase.calculators.lj import LennardJones

from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.cli import build_parser, main
from ase_bodyorder.h5md import H5MDWriter, read_log
from ase_bodyorder.md import RunawayWarning, _progress_text, run_md
from ase_bodyorder.models import list_models
from ase_bodyorder.report import plot_log, summarise


def write_log(path, order: int, ensemble: str = "nve", frames: int = 60, n_atoms: int = 8, seed: int = 0):
    """A synthetic log: dE_2 near -2.8 eV/atom, dE_3.. small, each fluctuating."""
    rng = np.random.default_rng(seed)
    means = np.array([-13.6, -2.8, 0.05, -0.01, 0.004, -0.001, 3e-4, 1e-4])[:order] * n_atoms
    scale = np.array([0.0, 0.01, 0.003, 0.001, 5e-4, 2e-4, 1e-4, 5e-5])[:order] * n_atoms
    metadata = {"ensemble": ensemble, "temperature_K": 300.0, "max_order": order,
                "command_line": ["ase-bodyorder", "md", "x.xyz"], "command_lines": [["ase-bodyorder", "md", "x.xyz"]]}
    with H5MDWriter(path, np.ones(n_atoms, int), np.ones(n_atoms), metadata=metadata) as writer:
        for f in range(frames):
            dE = means + scale * rng.normal(size=order)
            energies = np.cumsum(dE)
            writer.write_frame(
                f, 0.5 * f, rng.normal(size=(n_atoms, 3)), velocities=np.zeros((n_atoms, 3)),
                observables={
                    "body_order_energies": (dE, "eV"),
                    "truncated_energies": (energies, "eV"),
                    "subcluster_counts": (np.arange(1, order + 1), "1"),
                    "potential_energy": (energies[-1], "eV"),
                    "kinetic_energy": (1.0, "eV"),
                    "total_energy": (energies[-1] + 1.0 + 1e-3 * f, "eV"),
                    "temperature": (300 + 10 * rng.normal(), "K"),
                },
            )
    return path


@pytest.fixture
def log(tmp_path):
    return write_log(tmp_path / "run.h5", 3)


@pytest.fixture
def h2(tmp_path):
    path = tmp_path / "h2.xyz"
    ase.io.write(path, ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    return path


def lennard_jones_h4(distance: float) -> tuple[ase.Atoms, BodyOrderCalculator]:
    """Four H atoms in a strong Lennard-Jones potential (pair minimum at 2^(1/6) A), on
    a regular tetrahedron of edge ``distance``: at the minimum, a quiet system;
    squeezed below it, any dynamics blows up."""
    corners = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 1], [0, 1, 1]], float) / np.sqrt(2)
    atoms = ase.Atoms("H4", positions=corners * distance)
    return atoms, BodyOrderCalculator(LennardJones(sigma=1.0, epsilon=1.0, rc=3.0, smooth=True), 2, cutoff=3.0)


# ----------------------------------------------------------------------------------
# 1. errors that say what was expected and what went wrong


@pytest.mark.parametrize("command", ["decompose", "md"])
def test_a_text_file_is_not_a_structure(tmp_path, capsys, command):
    notes = tmp_path / "notes.md"
    notes.write_text("# ase-bodyorder\n\nMany-body expansions.\n\n```\npip install ase-bodyorder\n```\n")
    extra = ["--steps", "3", "--log", str(tmp_path / "a.h5")] if command == "md" else []
    assert main([command, str(notes), "-K", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert "could not read a structure from" in err and "notes.md" in err
    assert "expected a structure file that ASE can read (e.g. extxyz, xyz, cif, POSCAR)" in err
    assert "format" in err and "found no frame" in err
    assert "not iterable" not in err and "Traceback" not in err
    assert not (tmp_path / "a.h5").exists()


def test_an_unknown_suffix_says_ase_has_no_reader(tmp_path, capsys):
    odd = tmp_path / "cluster.weird"
    odd.write_text("x\n")
    assert main(["decompose", str(odd), "-K", "2"]) == 2
    assert "no reader for its suffix 'weird'" in capsys.readouterr().err


def test_a_log_is_not_a_structure(log, tmp_path, capsys):
    assert main(["md", str(log), "-K", "2", "--steps", "1", "--log", str(tmp_path / "new.h5")]) == 2
    err = capsys.readouterr().err
    assert "is an ase-bodyorder MD log" in err
    assert f"ase-bodyorder info {log}" in err and f"ase-bodyorder report {log}" in err
    plain = tmp_path / "data.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    assert main(["decompose", str(plain), "-K", "2"]) == 2
    err = capsys.readouterr().err
    assert "is an HDF5 file" in err and "MD log" not in err


def test_a_reader_returning_something_else(h2, monkeypatch, capsys):
    monkeypatch.setattr(ase.io, "read", lambda *args, **kwargs: 42)
    assert main(["decompose", str(h2), "-K", "2"]) == 2
    err = capsys.readouterr().err
    assert "returned int instead of atoms" in err and "ASE guessed its format as 'extxyz'" in err


@pytest.mark.parametrize("value", ["0", "-2", "2.5", "three"])
def test_max_order_is_checked_by_the_command_line(h2, capsys, value):
    with pytest.raises(SystemExit) as exit:
        main(["decompose", str(h2), "-K", value])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max-order/-K: must be an integer >= 1" in err
    assert "max_order" not in err


def test_an_unknown_model_name_lists_the_shipped_ones(h2, tmp_path, capsys):
    assert main(["md", str(h2), "-K", "2", "--steps", "2", "--model", "pet", "--log", str(tmp_path / "a.h5")]) == 2
    err = capsys.readouterr().err.strip()
    shipped = ", ".join(list_models()) or "none"
    assert err.startswith(f"ase-bodyorder md: error: no model file or known model named 'pet'; shipped models: {shipped}; ")
    assert "SevenNet models: sevennet-0" in err
    assert main(["curves", "--model", "pet", "--points", "3"]) == 2
    assert "shipped models:" in capsys.readouterr().err
    assert main(["decompose", str(h2), "-K", "2", "--model", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "missing.pt' does not exist" in err and "shipped models:" in err
    assert not (tmp_path / "a.h5").exists()


# ----------------------------------------------------------------------------------
# 2. a reader that goes away


def test_broken_pipe_exits_quietly(log):
    process = subprocess.Popen(
        [sys.executable, "-m", "ase_bodyorder.cli", "info", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    process.stdout.close()  # like `| head` that has seen enough, before anything is written
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141, err
    assert err == ""


# ----------------------------------------------------------------------------------
# 3. md --append


def test_append_needs_an_existing_log(h2, tmp_path, capsys):
    missing = tmp_path / "none.h5"
    assert main(["md", str(h2), "-K", "2", "--steps", "2", "--append", "--log", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "--append needs an existing log" in err and str(missing) in err
    assert "use without --append to start one" in err
    assert not missing.exists()


def test_every_command_line_is_recorded(tmp_path):
    atoms, calculator = lennard_jones_h4(2 ** (1 / 6))
    path = tmp_path / "lj.h5"
    run_md(atoms, calculator, steps=3, timestep_fs=0.5, log=path, progress=False, command_line=["first", "run"])
    # atoms are at the log's last frame: continue from there
    run_md(atoms, calculator, steps=2, timestep_fs=0.5, log=path, log_mode="append", step_offset=3,
           initialise_velocities=False, progress=False, command_line=["second", "--append"])
    data = read_log(path)
    assert data.metadata["command_lines"] == [["first", "run"], ["second", "--append"]]
    assert data.metadata["command_line"] == ["first", "run"]
    assert data.step.tolist() == list(range(6))
    text = summarise(path)
    assert "run 1:           first run" in text and "run 2:           second --append" in text


# ----------------------------------------------------------------------------------
# 4. units and help


def test_progress_bar_names_and_units():
    atoms, _ = lennard_jones_h4(2 ** (1 / 6))
    atoms.calc = BodyOrderCalculator(LennardJones(sigma=1.0, epsilon=1.0, rc=3.0, smooth=True), 3, cutoff=3.0)
    atoms.get_forces()
    text = _progress_text(atoms)
    assert text.startswith("T=0K Etot=-")
    dE = atoms.calc.results["body_order_energies"]
    assert text.endswith(f" dE_2..dE_3=[{dE[1]:.4f} {dE[2]:.4f}]eV"), text


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _every_command(parser, prefix=()):
    """(name, parser) of every command and subcommand (``ipi driver`` ...)."""
    for name, sub in _subparsers(parser).items():
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            yield from _every_command(sub, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), sub


def test_the_help_test_sees_every_command():
    names = [name for name, _ in _every_command(build_parser())]
    assert {"md", "decompose", "compare", "curves", "ipi driver", "ipi run", "ipi plugin-path"} <= set(names)


@pytest.mark.parametrize("command", [name for name, _ in _every_command(build_parser())])
def test_every_option_has_help_and_its_default(command):
    parser = dict(_every_command(build_parser()))[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name} has no help"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in action.help, f"{command} {name} does not say its default"


def test_help_shows_the_defaults():
    parser = _subparsers(build_parser())["md"]
    text = parser.format_help()
    assert "(default nve)" in text and "(default 10)" in text
    curves = _subparsers(build_parser())["curves"].format_help()
    assert "(default 91)" in curves and "(default both)" in curves


# ----------------------------------------------------------------------------------
# 5. no deprecation warnings from ASE


@pytest.mark.parametrize("ensemble", ["langevin", "bussi", "nve"])
def test_md_raises_no_future_or_deprecation_warning(ensemble):
    atoms, calculator = lennard_jones_h4(2 ** (1 / 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        run_md(atoms, calculator, steps=3, timestep_fs=0.5, ensemble=ensemble, temperature_K=30, seed=0,
               progress=False)


# ----------------------------------------------------------------------------------
# 7. drift only where it means something


def test_info_reports_the_drift_for_nve_only(tmp_path):
    nve = summarise(write_log(tmp_path / "nve.h5", 3, "nve"))
    assert "total-energy drift: " in nve and "eV/atom/ps" in nve
    for ensemble in ("langevin", "bussi"):
        text = summarise(write_log(tmp_path / f"{ensemble}.h5", 3, ensemble))
        drift = [line for line in text.splitlines() if line.startswith("total-energy drift")]
        assert drift == [f"total-energy drift: not reported, not meaningful under the {ensemble} thermostat"]


# ----------------------------------------------------------------------------------
# 8. runaways


def _runaways(**kwargs):
    atoms, calculator = lennard_jones_h4(kwargs.pop("distance"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_md(atoms, calculator, steps=30, temperature_K=100, seed=1, progress=False, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, RunawayWarning)]


def test_a_thermostat_left_far_behind_is_reported_once():
    messages = _runaways(distance=0.9, timestep_fs=1.0, ensemble="langevin")
    assert len(messages) == 1
    # 3 times, raised for 12 degrees of freedom (whose temperature fluctuates widely)
    assert "more than 5.08 times the thermostat's target of 100 K" in messages[0]
    assert "smaller time step" in messages[0] and "molecules as bodies (fragments)" in messages[0]


def test_an_nve_energy_drift_is_reported_once():
    messages = _runaways(distance=0.9, timestep_fs=1.0, ensemble="nve")
    assert len(messages) == 1
    assert "total energy changed by" in messages[0] and "eV/atom" in messages[0]


def test_a_sane_run_warns_nothing():
    assert _runaways(distance=2 ** (1 / 6), timestep_fs=0.5, ensemble="nve") == []
    assert _runaways(distance=2 ** (1 / 6), timestep_fs=0.5, ensemble="langevin") == []


def test_the_command_line_prints_runaway_warnings(capsys):
    from ase_bodyorder.cli.common import warnings_to_stderr as _warnings_to_stderr

    with _warnings_to_stderr("md"):
        warnings.warn("the temperature reached 8590 K", RunawayWarning)
        warnings.warn("the temperature reached 8590 K", RunawayWarning)  # each run warns once; shown each time
    err = capsys.readouterr().err
    assert err.count("ase-bodyorder md: warning: the temperature reached 8590 K\n") == 2


# ----------------------------------------------------------------------------------
# 9. report plots that can be read


@pytest.mark.parametrize("order", [3, 6])
def test_report_draws_each_order_about_its_mean(tmp_path, monkeypatch, order):
    from matplotlib.figure import Figure

    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    path = write_log(tmp_path / "run.h5", order, "langevin")
    plot_log(path, tmp_path / "run.png")
    assert (tmp_path / "run.png").stat().st_size > 10_000
    axes = figures[0].get_axes()
    # a time series and a histogram per order 2..K, then the sizes and the thermostat
    assert len(axes) == 2 * (order - 1) + 2
    dE = read_log(path).observable("body_order_energies") / 8
    for k in range(1, order):
        series = axes[2 * (k - 1)].get_lines()[0].get_ydata()
        assert np.allclose(series, (dE[:, k] - dE[:, k].mean()) * 1000)  # meV/atom about the mean
        bars = axes[2 * (k - 1) + 1].patches
        assert len(bars) >= 5 and sum(b.get_width() for b in bars) == len(dE)  # every frame binned


def test_plots_leave_the_backend_alone_and_reading_logs_needs_no_torch(log, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import matplotlib
        matplotlib.use("pdf")
        from ase_bodyorder.cli import main
        from ase_bodyorder.analysis import Curve, plot_curves
        assert main(["info", {str(log)!r}]) == 0
        assert main(["report", {str(log)!r}, "-o", {str(tmp_path / "r.png")!r}]) == 0
        assert "torch" not in sys.modules, "info/report imported torch"
        curve = Curve("dimer", (1, 1), [1.0, 2.0], [-1.0, 0.0])
        plot_curves([curve], {str(tmp_path / "c.png")!r})
        assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r.png").exists() and (tmp_path / "c.png").exists()


# ----------------------------------------------------------------------------------
# 10. one line for the user's errors, a traceback for bugs


def test_user_errors_are_one_line(tmp_path, capsys):
    plain = tmp_path / "data.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    assert main(["info", str(plain)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ase-bodyorder info: error: ") and "not an H5MD trajectory" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["--debug", "info", str(plain)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "not an H5MD trajectory" in err


@pytest.mark.parametrize(
    "bug",
    [
        lambda: None.shape,  # AttributeError
        lambda: [][1],  # IndexError
        lambda: len(5),  # TypeError
        lambda: np.arange(3).reshape(2, 2),  # a ValueError from numpy, not from input checks
    ],
)
def test_bugs_show_their_traceback(log, monkeypatch, capsys, bug):
    import ase_bodyorder.cli.info as cli

    monkeypatch.setattr(cli, "_cmd_info", lambda args: bug())
    assert main(["info", str(log)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "ase-bodyorder info: internal error:" in err and "probably a bug" in err


def test_the_package_s_own_errors_are_one_line(log, monkeypatch, capsys):
    import ase_bodyorder.cli.info as cli
    from ase_bodyorder.checks import LocalityError
    from ase_bodyorder.expansion import ExpansionTooLargeError

    for error, code in ((LocalityError("not local"), 2), (ExpansionTooLargeError("too many"), 1)):
        def fail(args, error=error):
            raise error

        monkeypatch.setattr(cli, "_cmd_info", fail)
        assert main(["info", str(log)]) == code
        err = capsys.readouterr().err
        assert err == f"ase-bodyorder info: error: {error}\n"


def test_interrupt_exits_130(log, monkeypatch, capsys):
    import ase_bodyorder.cli.info as cli

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_info", interrupt)
    assert main(["info", str(log)]) == 130
    assert capsys.readouterr().err == "ase-bodyorder info: interrupted\n"


# ----------------------------------------------------------------------------------
# 10. whose error it is, by class (ase_bodyorder.errors)


def test_errors_are_classified_by_their_class(log, monkeypatch, capsys):
    import ase.calculators.calculator as ase_calculator

    import ase_bodyorder.cli.info as cli
    from ase_bodyorder.errors import InputError, RunError, SettingError

    assert issubclass(InputError, ase_calculator.InputError) and issubclass(InputError, ValueError)
    assert issubclass(SettingError, TypeError) and issubclass(SettingError, InputError)
    cases = [(InputError("bad input"), 2), (RunError("could not go on"), 1), (FileNotFoundError("gone"), 2),
             (ValueError("raised by numpy, say"), 1)]
    for error, code in cases:
        def fail(args, error=error):
            raise error

        monkeypatch.setattr(cli, "_cmd_info", fail)
        assert main(["info", str(log)]) == code
        err = capsys.readouterr().err
        own = isinstance(error, (InputError, RunError, FileNotFoundError))
        assert ("Traceback" in err) is not own and ("internal error" in err) is not own


def test_a_library_message_names_no_command_line_option(tmp_path):
    from ase_bodyorder.errors import LogExistsError

    path = write_log(tmp_path / "run.h5", 2)
    with pytest.raises(LogExistsError) as caught:
        H5MDWriter(path, np.ones(8, int), np.ones(8))
    assert "--" not in str(caught.value) and "mode='overwrite'" in str(caught.value)


def test_runaway_advice_names_the_options_on_the_command_line(capsys):
    from ase_bodyorder.cli.common import warnings_to_stderr

    with warnings_to_stderr("md"):
        warnings.warn(RunawayWarning("running away. Try a smaller time step", remedies=("timestep_fs", "max_order")))
    assert capsys.readouterr().err == (
        "ase-bodyorder md: warning: running away. Try a smaller time step (options: --timestep, -K)\n")


# ----------------------------------------------------------------------------------
# 11. one name for one thing; saying what a long first step does


def test_cutoff_all_means_every_subset_in_every_command(h2, tmp_path, capsys):
    cluster = tmp_path / "h4.xyz"
    ase.io.write(cluster, ase.Atoms("H4", positions=[[0, 0, 0], [0, 0, 0.8], [0, 0, 3.0], [0, 0, 9.0]]))
    assert main(["decompose", str(cluster), "-K", "2", "--cutoff", "all", "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["subcluster_counts"] == [4, 6]  # every pair, the far atom's too
    assert main(["decompose", str(cluster), "-K", "2", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["subcluster_counts"] == [4, 3]  # within 4 A: not the far atom
    with pytest.raises(SystemExit) as caught:  # argparse's own error
        main(["decompose", str(cluster), "-K", "2", "--cutoff", "some"])
    assert caught.value.code == 2
    assert "must be a distance in A, 'model' (the model's radius) or 'all'" in capsys.readouterr().err


def test_an_order_above_the_number_of_bodies_uses_the_number_of_bodies(h2, tmp_path, capsys):
    log = tmp_path / "h2.h5"
    assert main(["md", str(h2), "-K", "99", "--steps", "2", "--log", str(log), "--quiet"]) == 0
    assert "note: -K 99 is more than the 2 bodies (atoms) of the structure: using K = 2" in capsys.readouterr().err
    assert read_log(log).metadata["max_order"] == 2


def test_a_long_calculation_shows_its_size_and_progress(monkeypatch, capsys):
    import ase_bodyorder.calculator as calculator_module
    import ase_bodyorder.mbe as mbe

    monkeypatch.setattr(mbe, "PROGRESS_DELAY_S", 0.0)  # "long" from the start
    monkeypatch.setattr(calculator_module, "LARGE_EXPANSION_ATOMS", 10)
    atoms = ase.Atoms("H6", positions=np.random.default_rng(0).uniform(0, 3, (6, 3)))
    calc = BodyOrderCalculator(LennardJones(rc=3.0, smooth=True), 3, cutoff=None, max_atoms_per_chunk=9,
                               progress=True)
    calc.get_potential_energy(atoms)
    err = capsys.readouterr().err
    assert "expansion: 6 + 15 + 20 subclusters of orders 1..3" in err and "subclusters:" in err
    calc.get_potential_energy(atoms.copy())  # announced once per calculator
    assert "expansion:" not in capsys.readouterr().err
    quiet = BodyOrderCalculator(LennardJones(rc=3.0, smooth=True), 3, cutoff=None, max_atoms_per_chunk=9)
    quiet.get_potential_energy(atoms)
    assert capsys.readouterr().err == ""


def test_todict_round_trips_or_refuses():
    from ase_bodyorder.errors import RunError

    calc = BodyOrderCalculator("default", 2, skin=0.3, cutoff=3.5)
    again = BodyOrderCalculator(**calc.todict())
    assert again.todict() == calc.todict() and again.parameters == calc.parameters
    with pytest.raises(RunError, match="cannot name a model given as a LennardJones object"):
        BodyOrderCalculator(LennardJones(rc=3.0), 2, cutoff=3.0).todict()


def test_calculators_named_by_text(tmp_path):
    from ase_bodyorder.errors import InputError
    from ase_bodyorder.loading import load_calculator

    assert isinstance(load_calculator("ase.calculators.lj:LennardJones"), LennardJones)
    (tmp_path / "helper.py").write_text("SIGMA = 1.5\n")
    (tmp_path / "mine.py").write_text(
        "from ase.calculators.lj import LennardJones\nfrom helper import SIGMA\nmade = LennardJones(sigma=SIGMA)\n")
    assert load_calculator(f"{tmp_path / 'mine.py'}:made").parameters.sigma == 1.5  # its folder importable
    for text, message in (("mine", "expected MODULE:NAME"), (f"{tmp_path / 'mine.py'}:other", "has no other"),
                          ("no_such_module_here:X", "cannot import no_such_module_here")):
        with pytest.raises(InputError, match=message):
            load_calculator(text)


# ----------------------------------------------------------------------------------
# 12. from a newcomer's trial


def test_a_device_the_machine_lacks_is_bad_input(h2, tmp_path, capsys):
    for device in ("cuda", "nonsense"):
        assert main(["md", str(h2), "-K", "2", "--steps", "1", "--device", device, "--log", str(tmp_path / "d.h5")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ase-bodyorder md: error: device '{device}'") and err.count("\n") == 1
    assert not (tmp_path / "d.h5").exists()


def test_a_decomposition_refused_at_its_first_structure_writes_nothing_on_stdout(h2, capsys):
    assert main(["decompose", str(h2), "-K", "2", "--cutoff", "0.5", "--format", "csv"]) == 2  # not local
    captured = capsys.readouterr()
    assert captured.out == "" and "not local" in captured.err


def test_a_log_continues_in_its_own_ensemble(h2, tmp_path, capsys):
    log = tmp_path / "run.h5"
    assert main(["md", str(h2), "-K", "2", "--steps", "2", "--ensemble", "langevin", "--temperature", "100",
                 "--log", str(log), "--quiet"]) == 0
    assert main(["md", str(h2), "-K", "2", "--steps", "2", "--append", "--log", str(log), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "was run in the langevin ensemble at 100 K: continue it with --ensemble langevin --temperature 100" in err
    assert "note: continuing" not in err  # said only for a run that goes on
    assert len(read_log(log).step) == 3


def test_info_names_every_subset_and_the_plain_model(tmp_path, h2, capsys):
    log = tmp_path / "all.h5"
    assert main(["md", str(h2), "-K", "2", "--cutoff", "all", "--steps", "1", "--log", str(log), "--quiet"]) == 0
    assert main(["info", str(log)]) == 0
    assert "cutoff:          all (every subset)" in capsys.readouterr().out


def test_compare_lowers_an_order_above_the_bodies_as_md_does(tmp_path, capsys):
    cluster = tmp_path / "h3.xyz"
    ase.io.write(cluster, ase.Atoms("H3", positions=[[0, 0, 0], [0, 0, 0.9], [0.8, 0, 0.4]]))
    assert main(["compare", str(cluster), "--model", "default", "--reference", "ase.calculators.lj:LennardJones",
                 "-K", "9", "--format", "csv", "--no-cache"]) == 0
    captured = capsys.readouterr()
    assert "note: -K 9 is more than the 3 bodies of the smallest cluster: using K = 3" in captured.err
    assert captured.out.count("\n") == 1 + 2  # header, k = 2 and 3

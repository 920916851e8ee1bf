"""Molecular dynamics with ASE and the per-step many-body log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import ase
import numpy as np
from ase import units

from .errors import BodyOrderWarning, InputError, LogMismatchError
from .h5md import H5MDWriter, read_log

__all__ = [
    "BodyOrderLogger",
    "FullModelSource",
    "RunawayWarning",
    "make_dynamics",
    "run_md",
    "body_order_observables",
    "log_metadata",
    "resume_from_log",
]


class RunawayWarning(BodyOrderWarning):
    """The dynamics is running away: the temperature far above the thermostat's target,
    or the total energy of an NVE run far from its start. ``remedies`` names the
    settings of :func:`run_md` that may help (the command line shows its options)."""

    def __init__(self, message: str, remedies: tuple[str, ...] = ()):
        super().__init__(message)
        self.remedies = tuple(remedies)


def log_metadata(calculator, extra: dict | None = None, command_line: list[str] | None = None) -> dict:
    """What a log records about the run: model, its hash, K, cutoff, dtype, fragments,
    package version and command line (``command_line``, default ``sys.argv``).

    ``command_lines`` lists the command line of every run written to the log: a log
    continued with ``mode="append"`` extends the list (see :class:`BodyOrderLogger`),
    while ``command_line`` stays the first run's."""
    from . import __version__

    command_line = list(sys.argv if command_line is None else command_line)
    info = dict(calculator.describe()) if hasattr(calculator, "describe") else {}
    info.setdefault("model", type(calculator).__name__)
    info.setdefault("model_sha256", "")
    info.update(
        fragments=getattr(calculator, "fragments", None) or [],
        package_version=__version__,
        command_line=command_line,
        command_lines=[command_line],
    )
    info.update(extra or {})
    return info


#: the settings that may tame a runaway: the time step, the body order, the bodies
_REMEDIES = ("timestep_fs", "max_order", "fragments")


def _ensemble_of(dynamics) -> str:
    """The ensemble name a log records for an ASE integrator."""
    name = type(dynamics).__name__
    return {"VelocityVerlet": "nve", "Langevin": "langevin", "Bussi": "bussi"}.get(name, name.lower())


class BodyOrderLogger:
    """ASE dynamics observer writing the H5MD many-body log.

    ``dyn.attach(logger, interval=n)`` logs every n steps: positions, velocities,
    forces (optional), the cell of periodic systems, and the observables
    ``potential_energy``, ``kinetic_energy``, ``total_energy``, ``temperature``,
    ``body_order_energies`` (dE_1..dE_K), ``truncated_energies`` (E^(1)..E^(K)),
    ``subcluster_counts`` and, with ``per_atom=True``,
    ``per_atom_body_order_energies``. It reads the calculator's results of the current
    step and never evaluates the model itself.

    :param path: the log file
    :param atoms: the atoms being simulated
    :param dynamics: the ASE dynamics (for step numbers and the timestep)
    :param mode: ``"create"`` (refuse an existing file), ``"overwrite"``, ``"append"``
    :param step_offset: added to the dynamics' step count (continuing a log)
    :param flush_every: logged frames between writes to disk
    :param sources: extra observables ``{name: (function(step) -> value, unit)}``
        written at every frame (MDAnalysis expects one value per frame; a source
        returns NaN where it has nothing)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        atoms: ase.Atoms,
        dynamics=None,
        *,
        mode: str = "create",
        step_offset: int = 0,
        flush_every: int = 10,
        forces: bool = True,
        per_atom: bool = False,
        metadata: dict | None = None,
        sources: dict | None = None,
    ):
        self.atoms = atoms
        self.sources = dict(sources or {})
        self.dynamics = dynamics
        self.step_offset = int(step_offset)
        self.forces = forces
        self.per_atom = per_atom
        self.skip_first = mode == "append" and step_offset > 0
        if metadata is None:
            metadata = log_metadata(atoms.calc)
        if dynamics is not None:
            metadata.setdefault("timestep_fs", dynamics.dt / units.fs)
            metadata.setdefault("ensemble", _ensemble_of(dynamics))
        appending = mode == "append" and Path(path).exists()
        self.writer = H5MDWriter.for_atoms(path, atoms, metadata=metadata, mode=mode, flush_every=flush_every)
        if appending:
            self._record_command_line(metadata)
        self._calls = 0

    def _record_command_line(self, metadata: dict) -> None:
        """Append this run's command line to the log's ``command_lines`` (the writer
        keeps an appended log's metadata as it was)."""
        parameters = self.writer.file.require_group("parameters/ase_bodyorder")
        lines = _json_list(parameters.attrs.get("command_lines"))
        if lines is None:  # a log from before command_lines: start from its first run's
            first = _json_list(parameters.attrs.get("command_line"))
            lines = [first] if first is not None else []
        lines += list(metadata.get("command_lines") or [metadata.get("command_line", list(sys.argv))])
        parameters.attrs["command_lines"] = json.dumps(lines)
        self.writer.file.flush()

    @property
    def step(self) -> int:
        local = self.dynamics.nsteps if self.dynamics is not None else self._calls
        return self.step_offset + local

    @property
    def time(self) -> float:
        dt = self.dynamics.dt / units.fs if self.dynamics is not None else 1.0
        return self.step * dt

    def __call__(self) -> None:
        self._calls += 1
        if self.skip_first and self.step == self.step_offset:
            return  # the frame we continue from is already in the log
        atoms = self.atoms
        energy = atoms.get_potential_energy()  # cached: computed by the last MD step
        results = atoms.calc.results
        kinetic = atoms.get_kinetic_energy()
        observables = {
            "potential_energy": (energy, "eV"),
            "kinetic_energy": (kinetic, "eV"),
            "total_energy": (energy + kinetic, "eV"),
            "temperature": (atoms.get_temperature(), "K"),
        }
        if "body_order_energies" in results:
            observables.update(body_order_observables([results], self.per_atom, stacked=False))
        for name, (source, unit) in self.sources.items():
            observables[name] = (source(self.step), unit)
        self.writer.write_frame(
            self.step,
            self.time,
            atoms.positions,
            velocities=atoms.get_velocities() * units.fs,
            forces=atoms.get_forces() if self.forces else None,
            cell=atoms.cell.array,
            observables=observables,
        )

    def close(self) -> None:
        self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: the calculator's body-order results that a log records, with their units
_BODY_ORDER_RESULTS = {"body_order_energies": "eV", "truncated_energies": "eV", "subcluster_counts": "1"}


def body_order_observables(results: list[dict], per_atom: bool = False, *, stacked: bool = True) -> dict:
    """The log's body-order observables ``{name: (value, unit)}`` from calculator
    results: of one structure (``stacked=False``, one result), or of several (the beads
    of a path integral) stacked along a first axis. ``per_atom`` adds
    ``per_atom_body_order_energies``."""
    units_of = dict(_BODY_ORDER_RESULTS)
    if per_atom:
        units_of["per_atom_body_order_energies"] = "eV"
    if stacked:
        return {name: (np.array([r[name] for r in results]), unit) for name, unit in units_of.items()}
    (result,) = results
    return {name: (result[name], unit) for name, unit in units_of.items()}


def resume_from_log(atoms: ase.Atoms, log: str | os.PathLike, structure: str = "the structure") -> int:
    """Continue a trajectory from the last frame of ``log``: set the positions,
    velocities (and the cell, when the log has one) of ``atoms`` from it and return its
    step. ``atoms`` supplies the species and their order, which must be the log's
    (``structure`` names it in the error)."""
    previous = read_log(log)
    if len(previous.step) == 0:
        raise LogMismatchError(f"log '{log}' holds no frame to continue from")
    if len(previous.numbers) != len(atoms) or (previous.numbers != atoms.numbers).any():
        raise LogMismatchError(
            f"cannot append: log '{log}' holds {len(previous.numbers)} atoms, "
            f"{structure} has {len(atoms)} (or other species)"
        )
    last = previous.frames()[-1]
    atoms.positions = last.positions
    atoms.set_velocities(last.get_velocities())
    if previous.cells is not None:
        atoms.cell = previous.cells[-1]
    return int(previous.step[-1])


def _json_list(value):
    """A list stored as a JSON attribute, or None."""
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        return None
    return decoded if isinstance(decoded, list) else None


class FullModelSource:
    """The plain (untruncated) model's energy every m steps, NaN in between: one extra
    evaluation on those steps, logged as ``full_model_energy`` beside E^(K)."""

    def __init__(self, atoms: ase.Atoms, calculator, every: int):
        self.atoms = atoms
        self.calculator = calculator
        self.every = int(every)

    def __call__(self, step: int) -> float:
        if step % self.every:
            return float("nan")
        return float(self.calculator.backend.evaluate_full(self.atoms, forces=False, stress=False)["energy"])


def make_dynamics(
    atoms: ase.Atoms,
    ensemble: str,
    timestep_fs: float,
    temperature_K: float | None = None,
    friction_per_fs: float = 0.01,
    taut_fs: float = 100.0,
    seed: int | None = None,
):
    """An ASE integrator: ``nve`` (velocity Verlet), ``langevin`` or ``bussi``.

    Langevin runs with ``fixcm=False`` (ASE's default ``True`` is deprecated since ASE
    3.28 and does not sample the NVT distribution exactly): the centre of mass then
    diffuses under the thermostat, as it should; add ``ase.constraints.FixCom`` to the
    atoms to pin it."""
    rng = np.random.default_rng(seed)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    if temperature_K is None:
        raise InputError(f"the {ensemble} ensemble needs a temperature")
    if ensemble == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms, dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs, fixcm=False, rng=rng
        )
    if ensemble == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, temperature_K=temperature_K, taut=taut_fs * units.fs, rng=rng)
    raise InputError(f"unknown ensemble {ensemble!r}: choose nve, langevin or bussi")


@dataclass
class MDResult:
    steps_done: int
    last_step: int
    log: str | None
    #: True when Ctrl-C (SIGINT) stopped the run early, after a whole step
    interrupted: bool = False


def run_md(
    atoms: ase.Atoms,
    calculator,
    *,
    steps: int,
    timestep_fs: float,
    ensemble: str = "nve",
    temperature_K: float | None = None,
    friction_per_fs: float = 0.01,
    seed: int | None = None,
    log: str | os.PathLike | None = None,
    log_every: int = 1,
    flush_every: int = 10,
    log_mode: str = "create",
    step_offset: int | None = None,
    per_atom: bool = False,
    full_model_every: int = 0,
    initialise_velocities: bool = True,
    progress: bool = True,
    command_line: list[str] | None = None,
    runaway_temperature_factor: float | None = 3.0,
    runaway_energy_per_atom: float | None = 0.05,
) -> MDResult:
    """Run MD with ``calculator`` on ``atoms``, logging the many-body contributions.

    Velocities are drawn from Maxwell-Boltzmann at ``temperature_K`` (when given and
    ``initialise_velocities``), with no net momentum. ``log_mode="append"`` continues an
    existing log from its last frame (:func:`resume_from_log`: positions, velocities
    and cell from the log, steps numbered on from its last) unless ``step_offset`` is
    given, in which case ``atoms`` are taken as they are. ``command_line`` is what the log
    records as the run's command (default ``sys.argv``).

    A :class:`RunawayWarning` is issued (once each) when a thermostatted run's
    temperature rises above ``runaway_temperature_factor`` times its target (after 5
    steps; the factor is raised for systems so small that their temperature fluctuates
    that much), or an NVE run's total energy moves more than ``runaway_energy_per_atom``
    (eV/atom) from its start; None turns a check off.
    """
    from ase.md.velocitydistribution import Stationary
    from tqdm.auto import tqdm

    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if timestep_fs <= 0:
        raise InputError(f"timestep must be > 0 fs, got {timestep_fs}")
    if log_every < 1:
        raise InputError(f"log_every must be >= 1, got {log_every}")
    if step_offset is None:
        step_offset = 0
        if log_mode == "append" and log is not None and Path(log).exists():
            step_offset, initialise_velocities = resume_from_log(atoms, log), False
    atoms.calc = calculator
    if initialise_velocities and temperature_K:
        _thermalize(atoms, temperature_K, np.random.default_rng(seed))
        Stationary(atoms)
    dyn = make_dynamics(atoms, ensemble, timestep_fs, temperature_K, friction_per_fs, seed=seed)
    # the first evaluation before any file is touched: bad species, a non-local model or
    # an expansion too large fail here, with no log left behind (ASE caches the result)
    atoms.get_forces()
    logger = None
    if log is not None:
        extra = {"ensemble": ensemble, "temperature_K": temperature_K or 0.0, "timestep_fs": timestep_fs}
        logger = _logger(
            log, atoms, dyn, calculator, extra, command_line, full_model_every,
            mode=log_mode, step_offset=step_offset, flush_every=flush_every, per_atom=per_atom,
        )
        dyn.attach(logger, interval=log_every)

    monitor = _RunawayMonitor(
        atoms,
        dyn,
        ensemble,
        temperature_K,
        step_offset=step_offset,
        max_order=getattr(calculator, "max_order", None),
        temperature_factor=runaway_temperature_factor,
        energy_per_atom=runaway_energy_per_atom,
    )
    dyn.attach(monitor, interval=1)
    bar = tqdm(total=steps, unit="step", disable=not progress, dynamic_ncols=True)

    def update_bar():
        if dyn.nsteps == 0:
            return
        bar.set_postfix_str(_progress_text(atoms), refresh=False)
        bar.update(1)

    dyn.attach(update_bar, interval=1)
    with _stop_on_interrupt() as stop:
        try:
            for _ in dyn.irun(steps):
                if stop.requested:
                    break
        finally:
            stop.closing = True  # no interrupt may cut the last flush short
            bar.close()
            if logger is not None:
                logger.close()
    return MDResult(
        steps_done=dyn.nsteps,
        last_step=step_offset + dyn.nsteps,
        log=None if log is None else str(log),
        interrupted=stop.requested,
    )


def _logger(log, atoms, dynamics, calculator, extra: dict, command_line, full_model_every: int, **options):
    """The run's BodyOrderLogger, with the plain model's energy every
    ``full_model_every`` steps when asked (``options``: mode, step_offset, ...)."""
    sources = {}
    if full_model_every:
        extra = {**extra, "full_model_every": full_model_every}
        sources["full_model_energy"] = (FullModelSource(atoms, calculator, full_model_every), "eV")
    return BodyOrderLogger(
        log, atoms, dynamics, metadata=log_metadata(calculator, extra, command_line), sources=sources, **options
    )


def _thermalize(atoms: ase.Atoms, temperature_K: float, rng) -> None:
    """Maxwell-Boltzmann momenta: ASE >= 3.29's thermalize_momenta, else the older
    (since deprecated) MaxwellBoltzmannDistribution."""
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        return
    thermalize_momenta(atoms, temperature_K, rng=rng)


def _progress_text(atoms: ase.Atoms) -> str:
    """The progress bar's postfix: temperature, total energy and dE_2..dE_K, with units."""
    text = f"T={atoms.get_temperature():.0f}K Etot={atoms.get_total_energy():.4f}eV"
    dE = atoms.calc.results.get("body_order_energies")
    if dE is not None and len(dE) == 2:
        text += f" dE_2={dE[1]:.4f}eV"
    elif dE is not None and len(dE) > 2:
        text += f" dE_2..dE_{len(dE)}=[{' '.join(f'{e:.4f}' for e in dE[1:])}]eV"
    return text


class _RunawayMonitor:
    """Dynamics observer that warns (once each) when the temperature of a thermostatted
    run leaves its target far behind, or an NVE run's total energy drifts far."""

    #: steps before the temperature check starts (the thermostat needs a few)
    settle_steps = 5

    def __init__(
        self,
        atoms,
        dynamics,
        ensemble: str,
        temperature_K: float | None,
        *,
        step_offset: int = 0,
        max_order: int | None = None,
        temperature_factor: float | None = 3.0,
        energy_per_atom: float | None = 0.05,
    ):
        self.atoms = atoms
        self.dynamics = dynamics
        self.step_offset = step_offset
        self.max_order = max_order
        thermostat = ensemble != "nve" and bool(temperature_K)
        self.target = float(temperature_K) if thermostat else None
        self.temperature_factor = temperature_factor if thermostat else None
        self.energy_per_atom = energy_per_atom if ensemble == "nve" else None
        self.start_energy = None
        self.warned_temperature = self.warned_energy = False

    def _factor(self) -> float:
        """``temperature_factor``, raised for small systems: with few degrees of
        freedom the kinetic temperature fluctuates widely at equilibrium (relative std
        sqrt(2/dof)), and a thermostatted run should not warn on ten-sigma noise."""
        try:
            dof = self.atoms.get_number_of_degrees_of_freedom()
        except AttributeError:  # older ASE
            dof = 3 * len(self.atoms)
        return max(self.temperature_factor, 1.0 + 10.0 * np.sqrt(2.0 / max(dof, 1)))

    def _advice(self, relaxing: bool) -> str:
        order = f"K = {self.max_order}" if self.max_order else "this body order"
        advice = (
            f"The truncated potential may have unphysical regions at {order}. Try a smaller time step, "
            "another body order, or molecules as bodies (fragments)"
        )
        if relaxing:
            advice += "; a structure far from a minimum of this potential heats up as it relaxes: relax it first"
        return advice + "."

    def __call__(self) -> None:
        local = self.dynamics.nsteps
        step = self.step_offset + local
        if self.temperature_factor is not None and not self.warned_temperature and local >= self.settle_steps:
            temperature = self.atoms.get_temperature()
            if not temperature <= self._factor() * self.target:  # NaN counts too
                self.warned_temperature = True
                warnings.warn(
                    RunawayWarning(
                        f"the temperature reached {temperature:.0f} K at step {step}, more than "
                        f"{self._factor():.3g} times the thermostat's target of {self.target:g} K: "
                        f"the dynamics may be running away. {self._advice(relaxing=True)}",
                        remedies=_REMEDIES,
                    ),
                    stacklevel=2,
                )
        if self.energy_per_atom is not None and not self.warned_energy:
            energy = self.atoms.get_total_energy()
            if self.start_energy is None:
                self.start_energy, self.start_step = energy, step
                return
            change = (energy - self.start_energy) / len(self.atoms)
            if not abs(change) <= self.energy_per_atom:
                self.warned_energy = True
                warnings.warn(
                    RunawayWarning(
                        f"the total energy changed by {change:+.3f} eV/atom between steps {self.start_step} "
                        f"and {step} of this NVE run (more than {self.energy_per_atom:g} eV/atom): the "
                        f"integration is not conserving energy. {self._advice(relaxing=False)}",
                        remedies=_REMEDIES,
                    ),
                    stacklevel=2,
                )


class _StopRequest:
    requested = False
    closing = False


@contextlib.contextmanager
def _stop_on_interrupt():
    """Turn the first Ctrl-C into a request to stop after the current step, so the run
    ends between two whole steps with the log consistent (like i-PI's soft exit); a
    second Ctrl-C interrupts at once, except while the log is being closed. Outside the
    main thread, signals stay as they are."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested and not stop.closing:
            raise KeyboardInterrupt
        stop.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

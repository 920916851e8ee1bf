"""H5MD 1.1 files: the per-step many-body log (docs/log-format.md).

Layout:

- ``h5md`` (version [1, 1], author, creator);
- ``particles/all/{position, velocity, force}/{step, time, value}``,
  ``particles/all/species`` (atomic numbers), ``particles/all/mass``,
  ``particles/all/box`` (``edges`` as a time series for periodic cells);
- ``observables/<name>/{step, time, value}``, every name at the top level (nested groups
  break MDAnalysis);
- ``parameters/ase_bodyorder``: the run's metadata as attributes.

Every ``value`` has a ``unit`` attribute. Durability: frames are buffered and written
every ``flush_every`` frames, then the file is flushed; datasets are chunked and
resizable, steps of rows not yet written read -1. The file is opened without HDF5
file locking (no SWMR: a SWMR file killed mid-run cannot be reopened), so a reader may
open it while it grows, and a writer killed with SIGKILL leaves a file that opens and
holds every flushed frame.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import ase
import h5py
import numpy as np

from .errors import InputError, LogExistsError, LogMismatchError  # noqa: F401 (re-exported)

__all__ = ["H5MDWriter", "LogData", "read_log", "LogExistsError", "LogMismatchError"]

# spelled as H5MD readers (MDAnalysis) know them; forces are stored in kJ/mol/A, the
# closest unit they know, and converted back to eV/A by read_log
UNITS = {
    "position": "Angstrom",
    "velocity": "Angstrom fs-1",
    "force": "kJ mol-1 Angstrom-1",
    "time": "fs",
    "edges": "Angstrom",
}
#: kJ/mol/A per eV/A
FORCE_TO_FILE = 1.0 / (ase.units.kJ / ase.units.mol)


class _Series:
    """A time-dependent H5MD element: ``step``, ``time``, ``value`` datasets."""

    def __init__(self, group: h5py.Group, shape=(), dtype="f8", unit: str | None = None):
        self.group = group
        if "value" not in group:
            chunk_rows = max(1, min(256, (1 << 16) // max(1, int(np.prod(shape)) * 8)))
            group.create_dataset(
                "step", (0,), maxshape=(None,), chunks=(256,), dtype="i8", fillvalue=-1
            )
            group.create_dataset("time", (0,), maxshape=(None,), chunks=(256,), dtype="f8")
            group["time"].attrs["unit"] = UNITS["time"]
            group.create_dataset(
                "value", (0, *shape), maxshape=(None, *shape), chunks=(chunk_rows, *shape), dtype=dtype
            )
            if unit is not None:
                group["value"].attrs["unit"] = unit
        self.step, self.time, self.value = group["step"], group["time"], group["value"]
        self.buffer: list[tuple[int, float, np.ndarray]] = []

    def append(self, step: int, time: float, value: np.ndarray) -> None:
        """Buffer one row; ``value`` must not change afterwards (callers pass a copy)."""
        self.buffer.append((step, time, value))

    def write(self) -> None:
        if not self.buffer:
            return
        n, extra = len(self.step), len(self.buffer)
        steps = np.array([b[0] for b in self.buffer], dtype=np.int64)
        times = np.array([b[1] for b in self.buffer], dtype=np.float64)
        values = np.stack([b[2] for b in self.buffer])
        # the value first and the step last: a reader trims rows whose step is -1
        self.value.resize(n + extra, axis=0)
        self.value[n:] = values
        self.time.resize(n + extra, axis=0)
        self.time[n:] = times
        self.step.resize(n + extra, axis=0)
        self.step[n:] = steps
        self.buffer.clear()


class H5MDWriter:
    """Writes an H5MD 1.1 trajectory with per-step observables.

    :param path: the file
    :param numbers: atomic numbers (fixed for the run)
    :param masses: atomic masses (amu)
    :param pbc: periodic directions; a periodic run stores the cell every frame
    :param metadata: attributes for ``parameters/ase_bodyorder`` (JSON-encoded when
        they are not plain numbers or strings)
    :param mode: ``"create"`` (refuse an existing file), ``"overwrite"`` or ``"append"``
    :param flush_every: frames between writes to disk (every written frame survives a
        crash)
    :param check: for append, metadata keys that must match the existing log
    """

    def __init__(
        self,
        path: str | os.PathLike,
        numbers: np.ndarray,
        masses: np.ndarray,
        pbc=(False, False, False),
        *,
        metadata: dict | None = None,
        mode: str = "create",
        flush_every: int = 10,
        check: tuple[str, ...] = ("max_order", "model_sha256", "cutoff", "fragments"),
        author: str = "unknown",
    ):
        if mode not in ("create", "overwrite", "append"):
            raise InputError(f"mode must be create, overwrite or append, got {mode!r}")
        if flush_every < 1:
            raise InputError(f"flush_every must be >= 1, got {flush_every}")
        self.path = Path(path)
        self.numbers = np.asarray(numbers, dtype=np.int64)
        self.pbc = np.asarray(pbc, dtype=bool).reshape(3)
        self.flush_every = int(flush_every)
        self.metadata = {k: _attribute(v) for k, v in (metadata or {}).items()}
        exists = self.path.exists()
        if exists and mode == "create":
            raise LogExistsError(
                f"log '{self.path}' exists: open it with mode='overwrite' to replace it or mode='append' to continue it"
            )
        if not self.path.parent.exists():
            raise FileNotFoundError(f"folder '{self.path.parent}' for the log does not exist")
        if mode == "append" and exists:
            self.file = h5py.File(self.path, "a", locking=False)
            self._check_append(check)
        else:
            try:
                self.file = h5py.File(self.path, "w", locking=False)
            except OSError as error:
                raise PermissionError(f"cannot write the log '{self.path}': {error}") from error
            self._create(masses, author)
        self.particles = self.file["particles/all"]
        self.series: dict[str, _Series] = {}
        self._pending = 0

    @classmethod
    def for_atoms(cls, path, atoms: ase.Atoms, **kwargs) -> "H5MDWriter":
        """A writer for the species, masses and periodicity of ``atoms``."""
        return cls(path, atoms.numbers, atoms.get_masses(), atoms.pbc, **kwargs)

    # ------------------------------------------------------------------------------

    def _create(self, masses, author: str) -> None:
        from . import __version__

        h5md = self.file.create_group("h5md")
        h5md.attrs["version"] = np.array([1, 1])
        h5md.create_group("author").attrs["name"] = author
        creator = h5md.create_group("creator")
        creator.attrs["name"] = "ase-bodyorder"
        creator.attrs["version"] = __version__
        particles = self.file.create_group("particles/all")
        particles.create_dataset("species", data=self.numbers)
        particles.create_dataset("mass", data=np.asarray(masses, dtype=np.float64))
        particles["mass"].attrs["unit"] = "amu"
        box = particles.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array(
            ["periodic" if p else "none" for p in self.pbc], dtype=h5py.string_dtype()
        )
        parameters = self.file.create_group("parameters/ase_bodyorder")
        for key, value in self.metadata.items():
            parameters.attrs[key] = value
        self.file.create_group("observables")

    def _check_append(self, keys: tuple[str, ...]) -> None:
        species = self.file["particles/all/species"][()]
        if not np.array_equal(species, self.numbers):
            raise LogMismatchError(
                f"cannot append to '{self.path}': it holds {len(species)} atoms "
                f"({chemical_formula(species)}), this run has {len(self.numbers)} ({chemical_formula(self.numbers)})"
            )
        old = dict(self.file["parameters/ase_bodyorder"].attrs)
        for key in keys:
            if key in old and key in self.metadata and _plain(old[key]) != _plain(self.metadata[key]):
                raise LogMismatchError(
                    f"cannot append to '{self.path}': {key} is {_plain(old[key])!r} there, "
                    f"{_plain(self.metadata[key])!r} in this run"
                )

    def last_step(self) -> int | None:
        """The last step written to the position series, if any."""
        group = self.file.get("particles/all/position")
        if group is None or len(group["step"]) == 0:
            return None
        steps = group["step"][()]
        steps = steps[steps >= 0]
        return int(steps[-1]) if len(steps) else None

    def _element(self, path: str, shape=(), dtype="f8", unit: str | None = None) -> _Series:
        series = self.series.get(path)
        if series is None:
            group = self.file.require_group(path)
            series = self.series[path] = _Series(group, shape, dtype, unit)
        return series

    # ------------------------------------------------------------------------------

    def write_frame(
        self,
        step: int,
        time: float,
        positions: np.ndarray,
        *,
        velocities: np.ndarray | None = None,
        forces: np.ndarray | None = None,
        cell: np.ndarray | None = None,
        observables: dict[str, tuple[object, str]] | None = None,
    ) -> None:
        """Buffer one frame: positions (A), velocities (A/fs), forces (eV/A; stored in
        kJ/mol/A), cell
        (rows are the vectors, A) and observables ``{name: (value, unit)}``."""
        n = len(self.numbers)
        # every series of the frame first, then the buffer appends in one go: an
        # interrupt in between leaves no frame half-buffered
        frame = [(self._element("particles/all/position", (n, 3), unit=UNITS["position"]), positions)]
        if velocities is not None:
            frame.append((self._element("particles/all/velocity", (n, 3), unit=UNITS["velocity"]), velocities))
        if forces is not None:
            frame.append(
                (self._element("particles/all/force", (n, 3), unit=UNITS["force"]), np.asarray(forces) * FORCE_TO_FILE)
            )
        if self.pbc.any() and cell is not None:
            frame.append((self._element("particles/all/box/edges", (3, 3), unit=UNITS["edges"]), cell))
        for name, (value, unit) in (observables or {}).items():
            frame.append(self._observable(name, value, unit))
        # copies: callers pass arrays they go on mutating (ASE's atoms.positions)
        frame = [(series, np.array(value, copy=True)) for series, value in frame]
        for series, value in frame:
            series.append(step, time, value)
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def write_observable(self, name: str, step: int, time: float, value, unit: str) -> None:
        """Buffer one value of a top-level observable (its own step/time series)."""
        series, value = self._observable(name, value, unit)
        series.append(step, time, np.array(value, copy=True))

    def _observable(self, name: str, value, unit: str) -> tuple[_Series, np.ndarray]:
        if "/" in name:
            raise InputError(f"observable names must not nest (got {name!r})")
        value = np.asarray(value)
        dtype = "i8" if np.issubdtype(value.dtype, np.integer) else "f8"
        return self._element(f"observables/{name}", value.shape, dtype, unit), value

    def flush(self) -> None:
        """Write every buffered frame and flush the file to disk."""
        for series in self.series.values():
            series.write()
        self.file.flush()
        self._pending = 0

    def close(self) -> None:
        if self.file.id.valid:
            self.flush()
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _attribute(value):
    if isinstance(value, (str, int, float, bool, np.integer, np.floating)):
        return value
    return json.dumps(value)


def _plain(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def chemical_formula(numbers) -> str:
    """The chemical formula of atomic numbers (ASE's, e.g. 'H16')."""
    return ase.Atoms(numbers=numbers).get_chemical_formula()


# ----------------------------------------------------------------------------------
# reading


@dataclass
class LogData:
    """A log read back: arrays indexed by frame, and the run's metadata."""

    numbers: np.ndarray
    masses: np.ndarray
    pbc: np.ndarray
    step: np.ndarray
    time: np.ndarray  # fs
    positions: np.ndarray  # (frames, atoms, 3) A
    velocities: np.ndarray | None  # A/fs
    forces: np.ndarray | None  # eV/A
    cells: np.ndarray | None  # (frames, 3, 3) A
    observables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def observable(self, name: str) -> np.ndarray:
        """Values of one observable (its own steps are in ``observables[name]['step']``)."""
        return self.observables[name]["value"]

    def frames(self) -> list[ase.Atoms]:
        """ASE ``Atoms`` for every frame, with the logged energy and forces attached."""
        from ase.calculators.singlepoint import SinglePointCalculator

        energies = self.observables.get("potential_energy")
        energy_at = {} if energies is None else dict(zip(energies["step"].tolist(), energies["value"].tolist()))
        frames = []
        for f, step in enumerate(self.step.tolist()):
            atoms = ase.Atoms(numbers=self.numbers, positions=self.positions[f], masses=self.masses, pbc=self.pbc)
            if self.cells is not None:
                atoms.cell = self.cells[f]
            if self.velocities is not None:
                atoms.set_velocities(self.velocities[f] / ase.units.fs)
            results = {}
            if step in energy_at:
                results["energy"] = energy_at[step]
            if self.forces is not None:
                results["forces"] = self.forces[f]
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
            atoms.info["step"] = step
            frames.append(atoms)
        return frames


def _read_series(group: h5py.Group) -> dict[str, np.ndarray]:
    step = group["step"][()]
    n = min(len(step), len(group["time"]), len(group["value"]))
    written = np.flatnonzero(step[:n] >= 0)
    n = int(written[-1]) + 1 if len(written) else 0
    return {"step": step[:n], "time": group["time"][:n], "value": group["value"][:n]}


def _open_for_reading(path: Path) -> h5py.File:
    # The writer takes no lock, so a plain read-only open works while it runs. HDF5
    # refuses a second open in the same process with other locking flags: retry then.
    try:
        return h5py.File(path, "r")
    except OSError as error:
        if "locking" not in str(error):
            raise
        return h5py.File(path, "r", locking=False)


def read_log(path: str | os.PathLike) -> LogData:
    """Read an H5MD log written by ase-bodyorder (also one still being written)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"log '{path}' does not exist")
    try:
        file = _open_for_reading(path)
    except OSError as error:
        raise InputError(f"'{path}' is not a readable HDF5 file: {error}") from error
    with file:
        if "h5md" not in file or "particles/all/position" not in file:
            raise InputError(f"'{path}' is not an H5MD trajectory (no h5md or particles/all/position)")
        particles = file["particles/all"]
        position = _read_series(particles["position"])
        n = len(position["step"])
        optional = {}
        for name in ("velocity", "force"):
            optional[name] = _read_series(particles[name])["value"][:n] if name in particles else None
        cells = _read_series(particles["box/edges"])["value"][:n] if "box/edges" in particles else None
        boundary = [_plain(b) for b in particles["box"].attrs["boundary"]]
        observables = {name: _read_series(group) for name, group in file["observables"].items()}
        metadata = {}
        if "parameters/ase_bodyorder" in file:
            for key, value in file["parameters/ase_bodyorder"].attrs.items():
                value = _plain(value)
                if isinstance(value, str) and value[:1] in "[{":
                    try:
                        value = json.loads(value)
                    except ValueError:
                        pass
                metadata[key] = value
        n = min([n] + [len(v) for v in optional.values() if v is not None] + ([len(cells)] if cells is not None else []))
        return LogData(
            numbers=particles["species"][()],
            masses=particles["mass"][()],
            pbc=np.array([b == "periodic" for b in boundary]),
            step=position["step"][:n],
            time=position["time"][:n],
            positions=position["value"][:n],
            velocities=None if optional["velocity"] is None else optional["velocity"][:n],
            forces=None if optional["force"] is None else optional["force"][:n] / FORCE_TO_FILE,
            cells=None if cells is None else cells[:n],
            observables=observables,
            metadata=metadata,
        )

"""i-PI: a socket client for the body-order driver, and in-process runs with the log.

- :func:`run_client` connects a :class:`~ase_bodyorder.ipi_driver.BodyOrderDriver` to
  an i-PI server (the i-PI socket protocol, single and batched). Unlike a loop that
  waits on the socket forever, it exits with an error when the server goes away or
  stops answering.
- :func:`run_inprocess` runs an i-PI input in this process (i-PI's
  ``InteractiveSimulation``), with the force field ``<ffdirect>`` on the PES file
  :data:`PLUGIN`, and writes the H5MD many-body log with one frame per i-PI step and a
  bead dimension. Paths in the input are read relative to the input's folder; i-PI's
  own outputs go to the current folder (or ``output_dir``). See docs/ipi.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["PLUGIN", "ServerGone", "load_plugin", "prepare_input", "run_client", "run_inprocess"]

#: the i-PI PES file, inside the installed package (what ``-P`` and ``<pes_path>`` take)
PLUGIN = Path(__file__).resolve().parent / "ipi_bodyorder.py"
_HEADER = 12


class ServerGone(ConnectionError):
    """The i-PI server closed the connection or stopped answering."""


def load_plugin(path: str | os.PathLike = PLUGIN):
    """Import an i-PI PES file as i-PI does (module name = file stem)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"i-PI plugin '{path}' does not exist")
    name = path.stem
    if name in sys.modules and Path(getattr(sys.modules[name], "__file__", "")) == path.resolve():
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def prepare_input(xml: str | os.PathLike) -> str:
    """The text of an i-PI input with its paths made absolute, so that it runs from
    any folder: paths are read relative to the input's own folder.

    - files named under ``<initialize>`` (structures, checkpoints, velocities);
    - ``<pes_path>`` of ``<ffdirect>``; a custom PES with none gets :data:`PLUGIN`;
    - ``template`` and ``model`` in ``<parameters>``, when they name a file there.
    """
    xml = Path(xml).resolve()
    folder = xml.parent
    try:
        root = ElementTree.fromstring(xml.read_text())
    except ElementTree.ParseError as error:
        raise InputError(f"i-PI input '{xml}' is not valid XML: {error}") from None

    def anchored(text: str | None) -> str | None:
        value = (text or "").strip()
        if value and not Path(value).is_absolute() and (folder / value).is_file():
            return str(folder / value)
        return None

    for initialize in root.iter("initialize"):
        for element in initialize.iter():
            if element is not initialize and len(element) == 0:
                path = anchored(element.text)
                if path is not None:
                    element.text = f" {path} "
    for ffdirect in root.iter("ffdirect"):
        pes = ffdirect.find("pes")
        pes_path = ffdirect.find("pes_path")
        if pes is not None and (pes.text or "").strip() == "custom":
            if pes_path is None:
                pes_path = ElementTree.SubElement(ffdirect, "pes_path")
            if not (pes_path.text or "").strip():
                pes_path.text = str(PLUGIN)
            else:
                pes_path.text = str((folder / pes_path.text.strip()).resolve())
        parameters = ffdirect.find("parameters")
        if parameters is not None and parameters.text:

            def replace(match: re.Match) -> str:
                path = anchored(match.group(2))
                return match.group(0) if path is None else f"{match.group(1)}{path}"

            parameters.text = re.sub(r"((?:template|model)\s*:\s*)([^,}]+)", replace, parameters.text)
    return ElementTree.tostring(root, encoding="unicode")


def _direct_run_settings(xml: Path, text: str) -> dict:
    """Check that an input can run in process (one ``<ffdirect>`` with a custom PES: a
    socket input would start a server and wait for drivers), and read the ensemble and
    target temperature that the log records."""
    root = ElementTree.fromstring(text)
    direct = [f for f in root.iter("ffdirect") if (f.findtext("pes") or "").strip() == "custom"]
    if len(direct) != 1 or root.find(".//ffsocket") is not None:
        raise InputError(
            f"'{xml}' cannot run in process: it needs exactly one <ffdirect> force field with "
            f"<pes>custom</pes> and no <ffsocket> (found {len(direct)} and "
            f"{len(list(root.iter('ffsocket')))}); run socket inputs with i-pi and "
            "'ase-bodyorder ipi driver' (docs/ipi.md)"
        )
    dynamics = root.find(".//motion/dynamics")
    settings = {"ensemble": dynamics.get("mode", "nve").strip() if dynamics is not None else "unknown"}
    if dynamics is not None and dynamics.find("thermostat") is not None:
        settings["thermostat"] = dynamics.find("thermostat").get("mode", "").strip()
    temperature = root.find(".//ensemble/temperature")
    if temperature is not None and (temperature.text or "").strip():
        from ipi.utils.units import unit_to_internal, unit_to_user

        value = float(temperature.text)
        unit = temperature.get("units", "atomic_unit").strip()
        settings["temperature_K"] = float(unit_to_user("temperature", "kelvin", unit_to_internal("temperature", unit, value)))
    return settings


@contextlib.contextmanager
def _working_directory(path: Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _message(text: str) -> bytes:
    return text.ljust(_HEADER).encode()


def _receive(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ServerGone("the i-PI server closed the connection")
        data += chunk
    return bytes(data)


def _receive_array(sock, count: int, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    return np.frombuffer(_receive(sock, count * dtype.itemsize), dtype=dtype).copy()


def run_client(driver, address: str, *, unix: bool = True, port: int = 12345, timeout: float = 600.0,
               sockets_prefix: str = "/tmp/ipi_") -> int:
    """Serve ``driver`` (an i-PI PES object) to an i-PI server until it says EXIT.

    Returns the number of force evaluations served. Raises :class:`ServerGone` if the
    server disappears or sends nothing for ``timeout`` seconds.
    """
    if unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address if address.startswith("/") else sockets_prefix + address
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = (address, port)
    try:
        sock.connect(target)
    except OSError as error:
        raise ServerGone(f"cannot connect to the i-PI server at {target}: {error}") from None
    sock.settimeout(timeout)
    initialised, have_data, batch, served = False, False, 1, 0
    results = []
    try:
        while True:
            try:
                header = _receive(sock, _HEADER).decode().strip()
            except socket.timeout:
                raise ServerGone(f"the i-PI server sent nothing for {timeout} s") from None
            if header == "STATUS":
                state = "NEEDINIT" if not initialised else ("HAVEDATA" if have_data else "READY")
                sock.sendall(_message(state))
            elif header == "INIT":
                _receive_array(sock, 1, np.int32)  # replica index
                length = int(_receive_array(sock, 1, np.int32)[0])
                text = _receive(sock, length).decode("utf-8", errors="replace")
                for token in text.split(","):
                    key, sep, value = token.partition(":")
                    if sep and key.strip() == "batch_size":
                        batch = int(value.strip())
                initialised = True
            elif header == "POSDATA":
                if batch > 1:
                    n_atoms = int(_receive_array(sock, 1, np.int32)[0])
                    cells = _receive_array(sock, batch * 18, np.float64)
                    positions = _receive_array(sock, batch * n_atoms * 3, np.float64).reshape(batch, n_atoms, 3)
                    results = driver.compute(
                        [cells[i * 18 : i * 18 + 9].reshape(3, 3) for i in range(batch)], list(positions)
                    )
                else:
                    cell = _receive_array(sock, 9, np.float64).reshape(3, 3)
                    _receive_array(sock, 9, np.float64)  # inverse cell
                    n_atoms = int(_receive_array(sock, 1, np.int32)[0])
                    positions = _receive_array(sock, n_atoms * 3, np.float64).reshape(n_atoms, 3)
                    results = [driver.compute(cell, positions)]
                have_data = True
            elif header == "GETFORCE":
                sock.sendall(_message("FORCEREADY"))
                if batch > 1:
                    sock.sendall(np.array([r[0] for r in results], np.float64).tobytes())
                    sock.sendall(np.int32(n_atoms).tobytes())
                    sock.sendall(np.array([np.asarray(r[1]).reshape(-1) for r in results], np.float64).tobytes())
                    sock.sendall(np.array([np.asarray(r[2]).reshape(9) for r in results], np.float64).tobytes())
                else:
                    energy, forces, virial, extras = results[0]
                    sock.sendall(np.float64(energy).tobytes())
                    sock.sendall(np.int32(n_atoms).tobytes())
                    sock.sendall(np.asarray(forces, np.float64).reshape(-1).tobytes())
                    sock.sendall(np.asarray(virial, np.float64).reshape(9).tobytes())
                for result in results:
                    extra = result[3].encode("utf-8")
                    sock.sendall(np.int32(len(extra)).tobytes())
                    sock.sendall(extra)
                served += len(results)
                have_data = False
            elif header == "EXIT":
                return served
            else:
                raise ServerGone(f"unexpected message {header!r} from the i-PI server")
    except (BrokenPipeError, ConnectionResetError) as error:
        raise ServerGone(f"the i-PI server went away: {error}") from None
    finally:
        sock.close()


def run_inprocess(
    xml: str | os.PathLike,
    steps: int,
    log: str | os.PathLike,
    *,
    mode: str = "create",
    flush_every: int = 10,
    per_atom: bool = False,
    output_dir: str | os.PathLike | None = None,
) -> dict:
    """Run an i-PI input in this process and log every step in H5MD.

    The input's force field must be ``<ffdirect>`` with ``<pes>custom</pes>``; its
    ``<pes_path>`` may be left out (the installed :data:`PLUGIN` is used). Paths in the
    input are relative to its folder (:func:`prepare_input`); i-PI writes its own
    outputs (properties, trajectories, RESTART) into ``output_dir`` (default: the
    current folder); ``log`` is relative to the current folder. After each i-PI step
    the driver's results for every bead (computed at the positions i-PI now holds) are
    written: the bead centroid in ``particles/all/position``; observables
    ``potential_energy`` (bead average, equal to i-PI's ``potential``, also logged as
    ``ipi_potential``), ``bead_potential_energy`` (frames, beads),
    ``body_order_energies`` and ``truncated_energies`` (frames, beads, K),
    ``subcluster_counts`` and ``bead_positions`` (frames, beads, atoms, 3).
    """
    from ipi.scripting import InteractiveSimulation

    from .h5md import H5MDWriter
    from .ipi_driver import INSTANCES
    from .md import log_metadata

    xml = Path(xml).resolve()
    if not xml.exists():
        raise FileNotFoundError(f"i-PI input '{xml}' does not exist")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    log = Path(log).resolve()
    output_dir = Path(output_dir or os.getcwd()).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    text = prepare_input(xml)
    settings = _direct_run_settings(xml, text)  # refused here, before i-PI starts
    with _working_directory(output_dir):
        before = {id(d) for d in INSTANCES}
        simulation = InteractiveSimulation(text)
        drivers = [d for d in INSTANCES if id(d) not in before]
        if len(drivers) != 1:
            raise InputError(
                f"'{xml}' must use exactly one <ffdirect> force field with <pes>custom</pes> "
                f"on {PLUGIN.name} (found {len(drivers)})"
            )
        driver = drivers[0]
        writer = None
        try:
            for _ in range(steps):
                simulation.run(1)
                frame = _frame_after_step(simulation, driver, per_atom)
                if writer is None:
                    extra = {"beads": len(frame["beads"]), "engine": "i-PI (in-process)", "ipi_input": text, **settings}
                    writer = H5MDWriter.for_atoms(
                        log,
                        driver.template_atoms,
                        metadata=log_metadata(driver.calculator, extra),
                        mode=mode,
                        flush_every=flush_every,
                    )
                writer.write_frame(
                    frame["step"], frame["time_fs"], np.mean(frame["beads"], axis=0),
                    cell=frame["cell"], observables=frame["observables"],
                )
        finally:
            if writer is not None:
                writer.close()
    return {"steps": steps, "beads": len(frame["beads"]), "log": str(log)}


def _frame_after_step(simulation, driver, per_atom: bool) -> dict:
    """What the log records after an i-PI step: the step, time, cell, bead positions
    and the driver's results for every bead at the positions i-PI now holds."""
    from ipi.utils.depend import dstrip
    from ipi.utils.units import unit_to_user

    from .md import body_order_observables

    # bead positions and i-PI's potential converted exactly as the driver converts
    # (i-PI's "ase" units differ from "angstrom"/"electronvolt")
    system = simulation.syslist[0]
    beads = [
        unit_to_user("length", "angstrom", dstrip(system.beads.q[b]).reshape(-1, 3))
        for b in range(system.beads.nbeads)
    ]
    results = [driver.results_at(b) for b in beads]
    bead_energy = np.array([r["energy"] for r in results])
    potential = float(unit_to_user("energy", "electronvolt", system.properties["potential"][0]))
    temperature = float(unit_to_user("temperature", "kelvin", system.properties["temperature"][0]))
    observables = {
        "potential_energy": (bead_energy.mean(), "eV"),
        "bead_potential_energy": (bead_energy, "eV"),
        **body_order_observables(results, per_atom),
        "bead_positions": (np.array(beads), "Angstrom"),
        "ipi_potential": (potential, "eV"),
        "temperature": (temperature, "K"),
    }
    return {
        "step": int(simulation.step),
        "time_fs": float(unit_to_user("time", "femtosecond", system.properties["time"][0])),
        "cell": unit_to_user("length", "angstrom", dstrip(system.cell.h).T),
        "beads": beads,
        "observables": observables,
    }

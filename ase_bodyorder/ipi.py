"""i-PI: a socket client for the body-order driver, and in-process runs with the log.

- :func:`run_client` connects a :class:`plugins/ipi_bodyorder.py` driver to an i-PI server
  (the i-PI socket protocol, single and batched). Unlike a loop that waits on the socket
  forever, it exits with an error when the server goes away or stops answering.
- :func:`run_inprocess` runs an i-PI input in this process (i-PI's
  ``InteractiveSimulation``), with the force field ``<ffdirect>`` on the plugin, and
  writes the H5MD many-body log with one frame per i-PI step and a bead dimension.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

import numpy as np

__all__ = ["PLUGIN", "ServerGone", "load_plugin", "run_client", "run_inprocess"]

#: the i-PI PES file shipped with the project
PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "ipi_bodyorder.py"
_HEADER = 12


class ServerGone(ConnectionError):
    """The i-PI server closed the connection or stopped answering."""


def load_plugin(path: str | os.PathLike = PLUGIN):
    """Import the i-PI PES file as i-PI does (module name = file stem)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"i-PI plugin '{path}' does not exist")
    name = path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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
    workdir: str | os.PathLike | None = None,
) -> dict:
    """Run an i-PI input in this process and log every step in H5MD.

    The input's force field must be ``<ffdirect>`` with ``<pes>custom</pes>`` and
    ``<pes_path>`` pointing at ``plugins/ipi_bodyorder.py``. After each i-PI step the
    driver's results for every bead (computed at the positions i-PI now holds) are
    written: the bead centroid in ``particles/all/position``; observables
    ``potential_energy`` (bead average, equal to i-PI's ``potential``, also logged as
    ``ipi_potential``), ``bead_potential_energy`` (frames, beads),
    ``body_order_energies`` and ``truncated_energies`` (frames, beads, K),
    ``subcluster_counts`` and ``bead_positions`` (frames, beads, atoms, 3).
    """
    from ipi.scripting import InteractiveSimulation
    from ipi.utils.depend import dstrip
    from ipi.utils.units import unit_to_user

    from .h5md import H5MDWriter
    from .md import log_metadata

    xml = Path(xml)
    if not xml.exists():
        raise FileNotFoundError(f"i-PI input '{xml}' does not exist")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    cwd = os.getcwd()
    os.chdir(workdir or xml.parent)
    try:
        before = {id(d) for d in getattr(sys.modules.get(PLUGIN.stem), "INSTANCES", [])}
        simulation = InteractiveSimulation(xml.read_text())
        # i-PI executes the PES file as a fresh module: look its drivers up afterwards
        plugin = sys.modules.get(PLUGIN.stem)
        drivers = [d for d in getattr(plugin, "INSTANCES", []) if id(d) not in before]
        if len(drivers) != 1:
            raise ValueError(
                f"'{xml}' must use exactly one <ffdirect> force field on {PLUGIN.name} "
                f"(found {len(drivers)})"
            )
        driver = drivers[0]
        atoms = driver.template_atoms
        writer = None
        try:
            for _ in range(steps):
                simulation.run(1)
                # bead positions and i-PI's potential converted exactly as the driver
                # converts (i-PI's "ase" units differ from "angstrom"/"electronvolt")
                system = simulation.syslist[0]
                beads = [
                    unit_to_user("length", "angstrom", dstrip(system.beads.q[b]).reshape(-1, 3))
                    for b in range(system.beads.nbeads)
                ]
                cell = unit_to_user("length", "angstrom", dstrip(system.cell.h).T)
                value, _, _ = system.properties["potential"]
                ipi_potential = float(unit_to_user("energy", "electronvolt", value))
                # the driver's evaluation at each bead's current positions
                results = [driver.results_at(b) for b in beads]
                if writer is None:
                    metadata = log_metadata(
                        driver.calculator,
                        {"beads": len(beads), "engine": "i-PI (in-process)", "ipi_input": xml.read_text()},
                    )
                    writer = H5MDWriter.for_atoms(
                        Path(cwd) / log if not Path(log).is_absolute() else log,
                        atoms,
                        metadata=metadata,
                        mode=mode,
                        flush_every=flush_every,
                    )
                step = int(simulation.step)
                time_value, _, _ = system.properties["time"]
                time_fs = float(unit_to_user("time", "femtosecond", time_value))
                bead_energy = np.array([r["energy"] for r in results])
                observables = {
                    "potential_energy": (bead_energy.mean(), "eV"),
                    "bead_potential_energy": (bead_energy, "eV"),
                    "body_order_energies": (np.array([r["body_order_energies"] for r in results]), "eV"),
                    "truncated_energies": (np.array([r["truncated_energies"] for r in results]), "eV"),
                    "subcluster_counts": (np.array([r["subcluster_counts"] for r in results]), "1"),
                    "bead_positions": (np.array(beads), "Angstrom"),
                    "ipi_potential": (ipi_potential, "eV"),
                }
                if per_atom:
                    observables["per_atom_body_order_energies"] = (
                        np.array([r["per_atom_body_order_energies"] for r in results]),
                        "eV",
                    )
                centroid = np.mean(beads, axis=0)
                writer.write_frame(step, time_fs, centroid, cell=cell, observables=observables)
        finally:
            if writer is not None:
                writer.close()
    finally:
        os.chdir(cwd)
    return {"steps": steps, "beads": len(beads), "log": str(log)}


# ----------------------------------------------------------------------------------
# command line: ase-bodyorder ipi driver | run


def add_ipi_commands(subparsers, command_error) -> None:
    """Register ``ase-bodyorder ipi driver`` and ``ase-bodyorder ipi run``."""
    ipi = subparsers.add_parser("ipi", help="i-PI: serve the body-order driver, or run an i-PI input with the log")
    sub = ipi.add_subparsers(dest="ipi_command", metavar="IPI_COMMAND", required=True)

    driver = sub.add_parser("driver", help="connect a body-order driver to a running i-PI server")
    driver.add_argument("--address", "-a", required=True, help="socket name (UNIX) or host (TCP)")
    driver.add_argument("--port", "-p", type=int, default=12345)
    driver.add_argument("--inet", action="store_true", help="TCP instead of a UNIX socket")
    driver.add_argument("--timeout", type=float, default=600.0, help="give up after this many silent seconds")
    driver.add_argument("--template", required=True, help="structure file giving species and order")
    driver.add_argument("--model", default="default")
    driver.add_argument("--max-order", "-K", type=int, required=True)
    driver.add_argument("--cutoff", type=float, default=None)
    driver.add_argument("--device", default=None)

    def run_driver(args) -> int:
        plugin = load_plugin()
        try:
            pes = plugin.BodyOrderDriver(
                template=args.template, max_order=args.max_order, model=args.model, cutoff=args.cutoff, device=args.device
            )
        except ValueError as error:
            raise command_error(str(error)) from None
        try:
            served = run_client(pes, args.address, unix=not args.inet, port=args.port, timeout=args.timeout)
        except ServerGone as error:
            print(f"ase-bodyorder ipi driver: {error}", file=sys.stderr)
            return 3
        print(f"i-PI said EXIT after {served} evaluations")
        return 0

    driver.set_defaults(run=run_driver)

    run = sub.add_parser("run", help="run an i-PI input in this process, logging every step (H5MD)")
    run.add_argument("input", help="i-PI XML input whose force field is <ffdirect> on plugins/ipi_bodyorder.py")
    run.add_argument("--steps", type=int, required=True)
    run.add_argument("--log", default="ipi_bodyorder.h5")
    run.add_argument("--flush-every", type=int, default=10)
    run.add_argument("--per-atom", action="store_true")
    run.add_argument("--overwrite", action="store_true")

    def run_inprocess_command(args) -> int:
        if args.steps < 1:
            raise command_error(f"--steps must be a positive number of steps, got {args.steps}")
        if Path(args.log).exists() and not args.overwrite:
            raise command_error(f"log '{args.log}' exists: pass --overwrite to replace it")
        summary = run_inprocess(
            args.input, args.steps, Path(args.log).resolve(),
            mode="overwrite" if args.overwrite else "create", flush_every=args.flush_every, per_atom=args.per_atom,
        )
        print(f"ran {summary['steps']} i-PI steps with {summary['beads']} beads; log written to '{args.log}'")
        return 0

    run.set_defaults(run=run_inprocess_command)

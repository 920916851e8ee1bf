"""i-PI: a real server as a subprocess, UNIX sockets in a temporary folder, bounded waits,
and every started process ended by its id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from conftest import random_cluster

from ase_bodyorder.h5md import read_log
from ase_bodyorder.ipi import PLUGIN, load_plugin, run_inprocess

FORCEFIELD_SOCKET = """<ffsocket name='bodyorder' mode='unix' pbc='false'>
    <address>{address}</address>{batch}<timeout>{timeout}</timeout>
    <exit_on_disconnect>{exit_on_disconnect}</exit_on_disconnect>
    <consolidate_messages>{consolidate}</consolidate_messages>
  </ffsocket>"""

FORCEFIELD_DIRECT = """<ffdirect name='bodyorder'>
    <pes>custom</pes>
    <pes_path>{plugin}</pes_path>
    <parameters>{{model: {model}, template: init.xyz, max_order: {order}}}</parameters>
  </ffdirect>"""

INPUT = """<simulation verbosity='low' safe_stride='100000'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, time{{femtosecond}}, conserved{{electronvolt}}, potential{{electronvolt}} ] </properties>
    <trajectory filename='pos' stride='1' format='xyz' cell_units='angstrom'> positions{{angstrom}} </trajectory>
    <trajectory filename='extras' stride='1' extra_type='body_order_energies'> extras </trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>4321</seed></prng>
  {forcefield}
  <system>
    <initialize nbeads='{beads}'>
      <file mode='ase'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 200 </velocities>
    </initialize>
    <forces><force forcefield='bodyorder'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='{ensemble}'>
        <timestep units='femtosecond'> 0.5 </timestep>
        {thermostat}
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>200</temperature></ensemble>
  </system>
</simulation>
"""

BOUND = 120  # seconds: no test waits longer on any process


def _write_input(folder: Path, *, steps, beads=1, ensemble="nve", forcefield, extras=True):
    thermostat = "<thermostat mode='pile_l'><tau units='femtosecond'>50</tau></thermostat>" if ensemble == "nvt" else ""
    text = INPUT.format(steps=steps, beads=beads, ensemble=ensemble, thermostat=thermostat, forcefield=forcefield)
    if not extras:  # a client that returns no extras (ASE's)
        text = "\n".join(line for line in text.splitlines() if "extra_type" not in line)
    (folder / "input.xml").write_text(text)
    return folder / "input.xml"


@pytest.fixture
def ipi_folder(tmp_path, exported_models):
    # carbon and oxygen: at 0.5 fs, hydrogen in this stiff potential would need a
    # smaller timestep to conserve energy (with ASE as with i-PI)
    atoms = random_cluster(6, 0.05, 2, species=[6, 8], min_distance=1.1)
    atoms.cell = [20, 20, 20]  # i-PI needs a cell; the cluster is not periodic
    atoms.center()
    ase.io.write(tmp_path / "init.xyz", atoms)
    os.symlink(exported_models["full"], tmp_path / "model.pt")
    return tmp_path


def _socket(address, batch=1, timeout=20, exit_on_disconnect=False, consolidate=True):
    return FORCEFIELD_SOCKET.format(
        address=address,
        batch=f"<batch_size>{batch}</batch_size>" if batch > 1 else "",
        timeout=timeout,
        exit_on_disconnect=str(exit_on_disconnect).lower(),
        consolidate=str(consolidate).lower(),
    )


class Processes:
    """Starts processes and ends every one of them by its id."""

    def __init__(self):
        self.started = []

    def start(self, command, cwd, log):
        process = subprocess.Popen(
            command, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(process)
        return process

    def end_all(self):
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=BOUND)
        # a killed i-PI leaves its socket file behind: remove this test process's ones
        for leftover in Path("/tmp").glob(f"ipi_bo_{os.getpid()}_*"):
            leftover.unlink(missing_ok=True)


@pytest.fixture
def processes():
    p = Processes()
    yield p
    p.end_all()


def _address(tmp_path) -> str:
    # a socket name unique to the test; i-PI (and the clients) put it at /tmp/ipi_NAME
    return f"bo_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"


def _wait_for_socket(name: str, process) -> None:
    path = f"/tmp/ipi_{name}"
    deadline = time.time() + BOUND
    while not os.path.exists(path):
        assert process.poll() is None, "i-PI exited before opening its socket"
        assert time.time() < deadline, "i-PI did not open its socket"
        time.sleep(0.1)


def _wait_for_lines(path: Path, count: int) -> None:
    """Wait (bounded) until i-PI's output file has ``count`` lines."""
    deadline = time.time() + BOUND
    while not path.exists() or len(path.read_text().splitlines()) < count:
        assert time.time() < deadline, f"{path} did not reach {count} lines"
        time.sleep(0.2)


def _driver(address, folder, *extra):
    return [sys.executable, "-m", "ase_bodyorder.cli", "ipi", "driver", "-a", address, "--template",
            str(folder / "init.xyz"), "--model", str(folder / "model.pt"), "-K", "3", *extra]


def _run_socket(folder, processes, *, steps, beads, ensemble, batch=1, drivers=1, driver_args=()):
    address = _address(folder)
    _write_input(folder, steps=steps, beads=beads, ensemble=ensemble, forcefield=_socket(address, batch=batch))
    server = processes.start(["i-pi", "input.xml"], folder, folder / "ipi.log")
    _wait_for_socket(address, server)
    clients = [processes.start(_driver(address, folder, *driver_args), folder, folder / f"driver{d}.log")
               for d in range(drivers)]
    server.wait(timeout=BOUND)
    for client in clients:
        client.wait(timeout=BOUND)
    text = (folder / "ipi.log").read_text()
    # i-PI exits 0 even when it fails: read its log
    assert "I-PI reports success" in text, text[-2000:]
    return np.loadtxt(folder / "sim.out"), clients


def test_nve_conserves_energy_through_ipi(ipi_folder, processes):
    out, clients = _run_socket(ipi_folder, processes, steps=200, beads=1, ensemble="nve")
    assert all(c.returncode == 0 for c in clients)
    conserved = out[:, 2]
    drift = np.polyfit(out[:, 1] / 1000, conserved, 1)[0] / 6
    print(f"i-PI NVE: drift {drift:.2e} eV/atom/ps, spread {np.ptp(conserved) / 6:.2e} eV/atom")
    assert np.ptp(conserved) / 6 < 1e-3
    assert abs(drift) < 1e-3


def pimd_folder(folder: Path, model: Path) -> Path:
    """A folder with a 6-atom H/C cluster (init.xyz, in a 20 A cell) and model.pt."""
    folder.mkdir()
    atoms = random_cluster(6, 0.05, 2, species=[1, 6], min_distance=1.0)
    atoms.cell = [20, 20, 20]
    atoms.center()
    ase.io.write(folder / "init.xyz", atoms)
    os.symlink(model, folder / "model.pt")
    return folder


def test_pimd_batched_equals_unbatched(tmp_path, exported_models, processes):
    results = []
    for batch in (1, 4):
        folder = pimd_folder(tmp_path / f"batch{batch}", exported_models["full"])
        out, _ = _run_socket(folder, processes, steps=10, beads=4, ensemble="nvt", batch=batch)
        positions = [a.positions for a in ase.io.read(folder / "sim.pos_0.xyz", ":")]
        results.append((out, np.array(positions)))
    (out1, pos1), (out4, pos4) = results
    assert np.allclose(out1[:, 3], out4[:, 3], atol=1e-8)  # potential
    assert np.allclose(pos1, pos4, atol=1e-6)


def test_inprocess_log_matches_ipi_output(ipi_folder):
    forcefield = FORCEFIELD_DIRECT.format(plugin=PLUGIN, model="model.pt", order=3)
    xml = _write_input(ipi_folder, steps=1000, beads=4, ensemble="nvt", forcefield=forcefield)
    log = ipi_folder / "run.h5"
    run_inprocess(xml, 8, log, output_dir=ipi_folder)
    data = read_log(log)
    out = np.loadtxt(ipi_folder / "sim.out")
    by_step = dict(zip(out[:, 0].astype(int).tolist(), out[:, 3].tolist()))
    assert data.step.tolist() == list(range(1, 9))
    for step, energy in zip(data.step.tolist(), data.observable("potential_energy")):
        assert abs(energy - by_step[step]) < 1e-6  # i-PI's own potential, bead average
    assert data.observable("body_order_energies").shape == (8, 4, 3)
    # info summarises the bead average, one row per body order (not one per bead)
    from ase_bodyorder.report import summarise

    summary = summarise(log)
    mean_dE3 = data.observable("body_order_energies")[:, :, 2].mean()
    rows = [line.split() for line in summary.splitlines() if line.startswith("   ") and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3] and "beads:      4" in summary
    assert abs(float(rows[2][1]) - mean_dE3) < 1e-6
    # extras present for every bead, and equal to the logged contributions
    for bead in range(4):
        text = (ipi_folder / f"sim.extras_{bead}").read_text()
        assert text.count("#EXTRAS(body_order_energies)#") >= 9
        last = [line for line in text.splitlines() if line and not line.startswith("#")][-1]
        values = np.array(last.split(), dtype=float)
        assert np.allclose(values, data.observable("body_order_energies")[-1, bead], atol=1e-6)


def _start_running(folder, processes, address, forcefield, lines):
    """A long i-PI run and one driver, once i-PI has written ``lines`` lines of output."""
    _write_input(folder, steps=100000, forcefield=forcefield)
    server = processes.start(["i-pi", "input.xml"], folder, folder / "ipi.log")
    _wait_for_socket(address, server)
    client = processes.start(_driver(address, folder), folder, folder / "driver.log")
    _wait_for_lines(folder / "sim.out", lines)
    return server, client


def test_driver_dies_mid_run(ipi_folder, processes):
    address = _address(ipi_folder)
    forcefield = _socket(address, timeout=5, exit_on_disconnect=True, consolidate=False)
    server, client = _start_running(ipi_folder, processes, address, forcefield, lines=20)
    os.killpg(client.pid, signal.SIGKILL)
    start = time.time()
    server.wait(timeout=60)  # no hang: i-PI ends within the bound
    print(f"i-PI ended {time.time() - start:.1f} s after its driver died")
    text = (ipi_folder / "ipi.log").read_text().lower()
    assert "disconnect" in text or "exit" in text


def test_driver_exits_when_the_server_dies(ipi_folder, processes):
    address = _address(ipi_folder)
    server, client = _start_running(ipi_folder, processes, address, _socket(address), lines=10)
    os.killpg(server.pid, signal.SIGKILL)
    start = time.time()
    code = client.wait(timeout=30)
    elapsed = time.time() - start
    assert code != 0
    assert elapsed < 10
    assert "server" in (ipi_folder / "driver.log").read_text()


def test_several_drivers_share_the_beads(ipi_folder, processes):
    out, clients = _run_socket(ipi_folder, processes, steps=10, beads=4, ensemble="nvt", drivers=2)
    served = []
    for d in range(2):
        text = (ipi_folder / f"driver{d}.log").read_text()
        served.append(int(text.split("EXIT after")[1].split()[0]))
    assert all(n > 0 for n in served), served
    assert sum(served) >= 4 * 10


def test_ase_socket_client_with_our_calculator(ipi_folder, processes):
    """Our calculator as ASE's SocketClient of an i-PI server."""
    from ase.calculators.socketio import SocketClient

    from ase_bodyorder import BodyOrderCalculator

    address = _address(ipi_folder)
    _write_input(ipi_folder, steps=20, forcefield=_socket(address), extras=False)
    server = processes.start(["i-pi", "input.xml"], ipi_folder, ipi_folder / "ipi.log")
    _wait_for_socket(address, server)
    atoms = ase.io.read(ipi_folder / "init.xyz")
    atoms.pbc = False
    atoms.calc = BodyOrderCalculator(ipi_folder / "model.pt", 3)
    client = SocketClient(unixsocket=address)
    client.run(atoms)
    server.wait(timeout=BOUND)
    assert "I-PI reports success" in (ipi_folder / "ipi.log").read_text()
    assert len(np.loadtxt(ipi_folder / "sim.out")) == 21


@pytest.mark.parametrize(
    "options, message",
    [
        ({"template": "init.xyz", "max_order": 2, "colour": "red"}, "unknown option"),
        ({"max_order": 2}, "'template' option"),
        ({"template": "missing.xyz", "max_order": 2}, "does not exist"),
        ({"template": "init.xyz", "max_order": 2, "model": "/nowhere.pt"}, "does not exist"),
        ({"template": "iron.xyz", "max_order": 2}, "not known to the model"),
    ],
)
def test_bad_driver_options(ipi_folder, options, message, monkeypatch):
    ase.io.write(ipi_folder / "iron.xyz", ase.Atoms("Fe2", positions=[[0, 0, 0], [2, 0, 0]]))
    monkeypatch.chdir(ipi_folder)
    options.setdefault("model", "model.pt")
    plugin = load_plugin()
    with pytest.raises(ValueError, match=message):
        plugin.BodyOrderDriver(**options)


def test_plugin_loads_through_ipi_py_driver(ipi_folder):
    """The real loading path: i-pi-py_driver -m custom -P plugins/ipi_bodyorder.py -o ..."""
    result = subprocess.run(
        ["i-pi-py_driver", "-m", "custom", "-P", str(PLUGIN), "-u", "-a", "nobody_listens",
         "-o", "template=init.xyz,max_order=2,model=model.pt,colour=red"],
        cwd=ipi_folder, capture_output=True, text=True, timeout=BOUND,
    )
    assert result.returncode != 0
    assert "unknown option" in result.stderr


def test_inprocess_paths_are_relative_to_the_input(ipi_folder, tmp_path, monkeypatch):
    """No <pes_path> (the installed PES is used), every path relative to the input's
    folder, run from elsewhere: i-PI's outputs land in output_dir, the log where asked."""
    forcefield = FORCEFIELD_DIRECT.replace("<pes_path>{plugin}</pes_path>", "").format(model="model.pt", order=2)
    xml = _write_input(ipi_folder, steps=1000, forcefield=forcefield)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = sorted(p.name for p in ipi_folder.iterdir())
    run_inprocess(os.path.relpath(xml, elsewhere), 2, "run.h5", output_dir="outputs")
    assert sorted(p.name for p in ipi_folder.iterdir()) == before
    assert (elsewhere / "outputs" / "sim.out").exists() and (elsewhere / "run.h5").exists()
    assert read_log(elsewhere / "run.h5").step.tolist() == [1, 2]


def test_threads_option(ipi_folder, monkeypatch):
    import torch

    monkeypatch.chdir(ipi_folder)
    threads = torch.get_num_threads()
    try:
        load_plugin().BodyOrderDriver(template="init.xyz", max_order=2, model="model.pt", threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be a positive number"):
            load_plugin().BodyOrderDriver(template="init.xyz", max_order=2, model="model.pt", threads=0)
    finally:
        torch.set_num_threads(threads)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "ipi"


@pytest.mark.parametrize("name, drivers", [("nvt_socket.xml", 1), ("pimd_socket.xml", 2)])
def test_shipped_socket_examples_run(tmp_path, processes, name, drivers):
    """The shipped socket inputs as shipped (a few steps, a private address): i-PI starts,
    every driver serves, i-PI reports success."""
    address = _address(tmp_path)
    text = (EXAMPLES / name).read_text()
    text = text.replace("<total_steps>1000</total_steps>", "<total_steps>3</total_steps>")
    text = text.replace("<address>bodyorder</address>", f"<address>{address}</address>")
    (tmp_path / name).write_text(text)
    (tmp_path / "h16.xyz").write_bytes((EXAMPLES / "h16.xyz").read_bytes())
    server = processes.start(["i-pi", name], tmp_path, tmp_path / "ipi.log")
    _wait_for_socket(address, server)
    command = [sys.executable, "-m", "ase_bodyorder.cli", "ipi", "driver", "-a", address, "--template", "h16.xyz",
               "-K", "2"]
    clients = [processes.start(command, tmp_path, tmp_path / f"driver{d}.log") for d in range(drivers)]
    assert server.wait(timeout=BOUND) == 0
    for client in clients:
        client.wait(timeout=BOUND)
    assert "I-PI reports success" in (tmp_path / "ipi.log").read_text()
    served = [int((tmp_path / f"driver{d}.log").read_text().split("EXIT after")[1].split()[0]) for d in range(drivers)]
    assert all(n > 0 for n in served), served  # every driver had work


@pytest.mark.parametrize("name", ["nvt_direct.xml", "pimd_direct.xml"])
def test_shipped_direct_examples_run(tmp_path, monkeypatch, name):
    from ase_bodyorder.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["ipi", "run", str(EXAMPLES / name), "--steps", "2", "--log", "run.h5"]) == 0
    assert read_log(tmp_path / "run.h5").step.tolist() == [1, 2]


def test_inprocess_refuses_a_socket_input_before_ipi_starts(tmp_path, monkeypatch):
    """A socket input is refused before i-PI runs: no socket file, no output moved."""
    from ase_bodyorder.cli import main

    text = (EXAMPLES / "nvt_socket.xml").read_text().replace("<address>bodyorder</address>",
                                                             f"<address>{_address(tmp_path)}</address>")
    (tmp_path / "socket.xml").write_text(text)
    (tmp_path / "h16.xyz").write_bytes((EXAMPLES / "h16.xyz").read_bytes())
    (tmp_path / "nvt.out").write_text("earlier output\n")
    monkeypatch.chdir(tmp_path)
    assert main(["ipi", "run", "socket.xml", "--steps", "2", "--log", "run.h5"]) == 2
    assert not Path(f"/tmp/ipi_{_address(tmp_path)}").exists()
    assert (tmp_path / "nvt.out").read_text() == "earlier output\n"
    assert not (tmp_path / "run.h5").exists()

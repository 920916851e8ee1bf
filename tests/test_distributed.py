"""Subclusters and frames on Dask workers: a real LocalCluster (and a real scheduler
process) on this machine, against the serial path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from ase.md.verlet import VelocityVerlet

from ase_bodyorder import BodyOrderCalculator
from ase_bodyorder.cli import main
from ase_bodyorder.distributed import DistributedError, decompose_frames, local_client
from ase_bodyorder.h5md import read_log

distributed = pytest.importorskip("distributed")

BOUND = 120  # seconds: any wait on another process is bounded


def h_cluster(n: int, seed: int, box: float = 5.0) -> ase.Atoms:
    rng = np.random.default_rng(seed)
    while True:
        positions = rng.uniform(0, box, (n, 3))
        d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        if d[np.triu_indices(n, 1)].min() > 0.6:
            return ase.Atoms(f"H{n}", positions=positions)


@pytest.fixture(scope="module")
def client():
    with local_client(2, 1) as c:
        yield c


@pytest.fixture
def one_thread():
    """Serial evaluation with the workers' one thread (bitwise comparisons)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _compare(a: dict, b: dict, exact: bool) -> None:
    for key in ("energy", "forces", "energies", "body_order_energies", "per_atom_body_order_energies"):
        if exact:
            assert np.array_equal(a[key], b[key]), key
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-10, err_msg=key)


def test_a_step_on_workers_equals_the_serial_step(client, one_thread):
    atoms = h_cluster(16, 0)
    serial = BodyOrderCalculator("default", 3, max_atoms_per_chunk=200)
    spread = BodyOrderCalculator("default", 3, max_atoms_per_chunk=200, client=client)
    expected = serial.compute_many([atoms])[0]
    got = spread.compute_many([atoms])[0]
    n_atoms = int(np.dot(expected["subcluster_counts"][1:], [2, 3]))
    assert n_atoms > 4 * 200  # several chunks, so both workers had work
    # the same chunks, the same model, one thread each, summed in the same order
    _compare(expected, got, exact=True)
    # the default: chunks cut so that every worker thread gets about two
    got = BodyOrderCalculator("default", 3, client=client).compute_many([atoms])[0]
    _compare(expected, got, exact=False)
    # each worker loaded the model once (for the calculators above) and runs one thread
    loaded = client.run(lambda: len(__import__("ase_bodyorder.backends.dask").backends.dask._WORKER_BACKENDS))
    assert sorted(loaded.values()) == [1, 1]
    threads = client.run(lambda: __import__("torch").get_num_threads())
    assert sorted(threads.values()) == [1, 1]


def test_tasks_carry_no_model(client):
    """A task names the model by its recipe (path or name), not by its weights."""
    calc = BodyOrderCalculator("default", 2, client=client)
    recipe = calc.backend.model_on_workers
    import pickle

    assert len(pickle.dumps(recipe)) < 500
    assert os.path.isabs(recipe.model) or recipe.model == "default"


def test_ase_md_with_workers_follows_the_serial_trajectory(client):
    def trajectory(calculator):
        atoms = h_cluster(8, 3, box=4.0)
        atoms.set_velocities(np.random.default_rng(0).normal(0, 0.02, (8, 3)))
        atoms.calc = calculator
        positions = []
        dyn = VelocityVerlet(atoms, timestep=0.5 * ase.units.fs)
        for _ in range(5):
            dyn.run(1)
            positions.append(atoms.positions.copy())
        return np.array(positions), atoms.get_potential_energy()

    p0, e0 = trajectory(BodyOrderCalculator("default", 3))
    p1, e1 = trajectory(BodyOrderCalculator("default", 3, client=client))
    np.testing.assert_allclose(p1, p0, rtol=0, atol=1e-10)
    assert abs(e1 - e0) < 1e-9


def test_an_ase_calculator_is_sent_to_the_workers_once(client):
    lj = LennardJones(sigma=1.0, epsilon=0.1, rc=3.0, smooth=True)
    atoms = h_cluster(10, 4, box=4.0)
    expected = BodyOrderCalculator(lj, 3, cutoff=3.0).compute_many([atoms])[0]
    spread = BodyOrderCalculator(lj, 3, cutoff=3.0, client=client, max_atoms_per_chunk=30)
    assert isinstance(spread.backend.model_on_workers, distributed.Future)
    _compare(expected, spread.compute_many([atoms])[0], exact=True)


def test_frames_on_workers_come_back_in_order(client):
    frames = [h_cluster(8, seed, box=4.0) for seed in range(6)]
    serial = BodyOrderCalculator("default", 3)
    expected = list(decompose_frames(frames, serial, full_model=True))
    got = list(decompose_frames(frames, serial, full_model=True, client=client))
    assert len(got) == len(frames)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b.body_order_energies, a.body_order_energies, rtol=0, atol=1e-10)
        assert abs(b.full_energy - a.full_energy) < 1e-10
        assert np.array_equal(a.counts, b.counts)


def test_a_task_error_on_a_worker_comes_through_as_itself(client, tmp_path):
    """A model file the workers cannot read is the task's error, not a lost scheduler."""
    import shutil

    from ase_bodyorder.models import default_model

    model = tmp_path / "copy.pt"
    shutil.copy(default_model(), model)
    calc = BodyOrderCalculator(model, 2, client=client)
    model.unlink()  # gone before any worker loads it
    with pytest.raises(FileNotFoundError, match="copy.pt"):
        calc.compute_many([h_cluster(6, 12, box=4.0)])


def test_client_must_be_a_running_client(client):
    with pytest.raises(TypeError, match="client= takes a dask.distributed.Client .*got int"):
        BodyOrderCalculator("default", 2, client=42)
    with pytest.raises(ValueError, match="the model, device and client are fixed"):
        BodyOrderCalculator("default", 2).set(client=client)
    with pytest.raises(TypeError, match="not a model: .*calculator="):
        BodyOrderCalculator(BodyOrderCalculator("default", 2), 2)


def test_a_port_that_is_not_a_scheduler_is_refused_in_bounded_time():
    """Something listens but never speaks Dask (as the dashboard's port): no hang."""
    import socket

    from ase_bodyorder.distributed import connect

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    start = time.time()
    try:
        with pytest.raises(OSError, match=f"cannot reach a Dask scheduler at tcp://127.0.0.1:{port}"):
            connect(f"tcp://127.0.0.1:{port}", timeout=2)
    finally:
        server.close()
    assert time.time() - start < 30


# ----------------------------------------------------------------------------------
# the command line


def test_decompose_command_with_workers_equals_serial(tmp_path, capsys):
    trajectory = tmp_path / "traj.extxyz"
    ase.io.write(trajectory, [h_cluster(8, seed, box=4.0) for seed in range(5)])
    assert main(["decompose", str(trajectory), "-K", "3", "--format", "json", "--quiet"]) == 0
    serial = json.loads(capsys.readouterr().out)
    assert main(["decompose", str(trajectory), "-K", "3", "--format", "json", "--quiet", "--workers", "2"]) == 0
    spread = json.loads(capsys.readouterr().out)
    assert [r["structure"] for r in spread] == [f"{trajectory}@{i}" for i in range(5)]
    for a, b in zip(serial, spread):
        np.testing.assert_allclose(b["body_order_energies"], a["body_order_energies"], rtol=0, atol=1e-10)


def test_decompose_reads_an_md_log(tmp_path, capsys):
    log = tmp_path / "run.h5"
    h8 = tmp_path / "h8.xyz"
    ase.io.write(h8, h_cluster(8, 5, box=4.0))
    assert main(["md", str(h8), "-K", "2", "--steps", "4", "--log", str(log), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["decompose", str(log), "-K", "2", "--format", "csv", "--quiet", "--workers", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    frames = read_log(log).frames()
    assert len(lines) == 1 + len(frames)
    logged = read_log(log)
    # E^(2) of every frame, as the MD run logged it
    column = lines[0].split(",").index("E^(2)/eV")
    np.testing.assert_allclose([float(line.split(",")[column]) for line in lines[1:]],
                               logged.observable("truncated_energies")[:, -1], atol=2e-6)


def test_dask_options_are_checked(tmp_path, capsys):
    h2 = tmp_path / "h2.xyz"
    ase.io.write(h2, ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    assert main(["decompose", str(h2), "-K", "2", "--workers", "0"]) == 2
    assert "--workers must be a positive number" in capsys.readouterr().err
    assert main(["decompose", str(h2), "-K", "2", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach a Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["decompose", str(h2), "-K", "2", "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["decompose", str(h2), "-K", "2", "--threads-per-worker", "2"]) == 2
    assert "--threads-per-worker applies to the local workers of --workers" in capsys.readouterr().err


def test_decompose_a_trajectory_with_molecules_as_bodies(tmp_path, capsys):
    """--fragments molecules on many frames: the molecules of the first frame."""
    frames = []
    for shift in (0.0, 0.05, 0.1):
        atoms = ase.Atoms("H4", positions=[[0, 0, 0], [0, 0, 0.74], [3, 0, 0], [3, 0, 0.74 + shift]])
        frames.append(atoms)
    path = tmp_path / "h2h2.extxyz"
    ase.io.write(path, frames)
    assert main(["decompose", str(path), "-K", "2", "--fragments", "molecules", "--format", "csv", "--quiet",
                 "--workers", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[1].split(",")[-2:] == ["2", "1"]  # 2 bodies, 1 pair


def test_ipi_driver_with_workers_gives_the_serial_dynamics(tmp_path, exported_models):
    """A real i-PI server, PIMD with batches of 4 beads, served once by a serial driver
    and once by a driver whose subclusters run on 2 local workers."""
    from test_ipi import Processes, _run_socket, pimd_folder

    runs = []
    for name, extra in (("serial", ()), ("workers", ("--workers", "2"))):
        folder = pimd_folder(tmp_path / name, exported_models["full"])
        processes = Processes()
        try:
            out, clients = _run_socket(folder, processes, steps=5, beads=4, ensemble="nvt", batch=4, driver_args=extra)
        finally:
            processes.end_all()
        assert all(c.returncode == 0 for c in clients)
        served_by = (folder / "driver0.log").read_text()
        assert ("subclusters on 2 Dask workers (2 threads)" in served_by) == bool(extra), served_by
        runs.append((out, np.array([a.positions for a in ase.io.read(folder / "sim.pos_0.xyz", ":")])))
    (out0, pos0), (out1, pos1) = runs
    np.testing.assert_allclose(out1[:, 3], out0[:, 3], rtol=0, atol=1e-8)  # potential
    np.testing.assert_allclose(pos1, pos0, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------
# faults


def test_a_step_survives_a_worker_killed_mid_step(one_thread):
    atoms = h_cluster(16, 6, box=4.5)
    serial = BodyOrderCalculator("default", 4, max_atoms_per_chunk=400)
    expected = serial.compute_many([atoms])[0]
    with local_client(2, 1) as client:
        spread = BodyOrderCalculator("default", 4, max_atoms_per_chunk=400, client=client)
        spread.compute_many([h_cluster(16, 7, box=4.5)])  # models loaded on both workers
        pids = list(client.run(os.getpid).values())
        result: dict = {}
        step = threading.Thread(target=lambda: result.update(spread.compute_many([atoms])[0]))
        step.start()
        time.sleep(0.5)
        assert step.is_alive(), "the step ended before the worker could be killed: make it longer"
        os.kill(pids[0], signal.SIGKILL)
        step.join(BOUND)
        assert not step.is_alive()
        assert pids[0] not in client.run(os.getpid).values()  # it really died
    _compare(expected, result, exact=True)


class _Hungry(Calculator):
    """An ASE calculator that takes ``megabytes`` of memory on every call."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, megabytes: int, **kwargs):
        super().__init__(**kwargs)
        self.megabytes = megabytes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.megabytes:
            block = np.ones(self.megabytes * 2**17)  # 8 bytes each, touched
            time.sleep(3)  # long enough for the nanny's memory monitor
            del block
        self.results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3))}


def test_workers_killed_for_memory_say_how_to_lower_the_chunks():
    import dask

    atoms = h_cluster(6, 8, box=4.0)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with local_client(1, 1, memory_limit="600MB") as client:
            calc = BodyOrderCalculator(_Hungry(1500), 2, cutoff=3.0, client=client, check_locality=False)
            with pytest.raises(DistributedError, match="lower max_atoms_per_chunk"):
                calc.compute_many([atoms])


def test_a_memory_error_on_a_worker_says_how_to_lower_the_chunks(client):
    class NoMemory(LennardJones):
        def calculate(self, *args, **kwargs):
            raise MemoryError("no room")

    calc = BodyOrderCalculator(NoMemory(rc=3.0), 2, cutoff=3.0, client=client, check_locality=False)
    with pytest.raises(DistributedError, match=r"out of memory on a chunk of \d+ atoms .*lower max_atoms_per_chunk"):
        calc.compute_many([h_cluster(6, 9, box=4.0)])


@pytest.fixture
def scheduler(tmp_path):
    """A real scheduler process and one worker process; killed at the end."""
    file = tmp_path / "scheduler.json"
    common = dict(cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    processes = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file", str(file), "--port", "0",
         "--no-dashboard"], **common)]
    deadline = time.time() + BOUND
    while not file.exists():
        assert time.time() < deadline, "the scheduler did not start"
        time.sleep(0.2)
    time.sleep(0.5)  # written, then read back whole
    address = json.loads(file.read_text())["address"]
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard"], **common))
    yield address, processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=BOUND)


def test_md_on_a_scheduler_that_dies_keeps_its_log(tmp_path, scheduler):
    address, processes = scheduler
    h16 = tmp_path / "h16.xyz"
    ase.io.write(h16, h_cluster(16, 10))
    log = tmp_path / "run.h5"
    md = subprocess.Popen(
        [sys.executable, "-m", "ase_bodyorder.cli", "md", str(h16), "-K", "3", "--steps", "100000", "--log", str(log),
         "--flush-every", "1", "--quiet", "--scheduler", address],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + BOUND
    frames = 0
    while frames < 3:  # the run goes on through the scheduler
        assert md.poll() is None, md.stderr.read()
        assert time.time() < deadline, "md wrote no frames"
        time.sleep(0.5)
        try:
            frames = len(read_log(log).step)
        except Exception:  # not yet created, or being written
            frames = 0
    processes[0].send_signal(signal.SIGKILL)
    _, err = md.communicate(timeout=BOUND)
    assert md.returncode == 1, err
    assert "lost the Dask scheduler at" in err and "Traceback" not in err
    data = read_log(log)
    assert f"holds {len(data.step)} frames up to step {int(data.step[-1])}" in err
    assert len(data.step) >= frames
    # every frame written is whole: a full row of every logged quantity
    assert np.isfinite(data.observable("truncated_energies")).all()


def test_every_call_after_the_scheduler_dies_says_it_was_lost(scheduler):
    """The loss surfaces wherever the next call to the scheduler is: before the client
    notices (a closed connection), while it tries to reconnect, and after it gave up."""
    from ase_bodyorder.distributed import connect

    address, processes = scheduler
    client = connect(address)
    try:
        client.wait_for_workers(1, timeout=BOUND)
        atoms = h_cluster(8, 3)
        calculator = BodyOrderCalculator("default", 3, client=client)
        atoms.calc = calculator
        atoms.get_potential_energy()
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait(timeout=BOUND)
        calls = {
            "a step": lambda: atoms.calc.calculate(atoms, ["energy"], ["positions"]),
            "chunk sizes": lambda: calculator.backend.chunk_atoms(10_000, 100_000),
            "frames": lambda: list(decompose_frames([atoms, atoms], calculator)),
        }
        for name, call in calls.items():
            with pytest.raises(DistributedError, match="lost the Dask scheduler at"):
                call()
        deadline = time.time() + BOUND
        while client.status == "running":
            assert time.time() < deadline, "the client never noticed"
            time.sleep(0.2)
        for name, call in calls.items():  # the client gave up
            with pytest.raises(DistributedError, match="lost the Dask scheduler at"):
                call()
    finally:
        client.close()


def test_md_command_joins_a_running_scheduler(tmp_path, scheduler):
    address, _ = scheduler
    h8 = tmp_path / "h8.xyz"
    ase.io.write(h8, h_cluster(8, 11, box=4.0))
    for name, extra in (("serial.h5", []), ("spread.h5", ["--scheduler", address])):
        assert main(["md", str(h8), "-K", "3", "--steps", "3", "--log", str(tmp_path / name), "--quiet",
                     "--ensemble", "nve", *extra]) == 0
    a, b = read_log(tmp_path / "serial.h5"), read_log(tmp_path / "spread.h5")
    np.testing.assert_allclose(b.observable("truncated_energies"), a.observable("truncated_energies"), rtol=0, atol=1e-9)

"""A normal (non-editable) install drives i-PI from any folder.

A wheel is built from this checkout and installed, without its dependencies (they come
from the test environment, itself a virtual environment or not), into a fresh virtual
environment. Everything then runs from
a folder outside the checkout, with that environment's commands: the PES file path it
prints, a real i-PI server with its socket driver, and an in-process run of a shipped
example named by a path relative to the working folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "ipi"
BOUND = 180  # seconds: no process is waited on longer


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh virtual environment holding the wheel of this checkout."""
    folder = tmp_path_factory.mktemp("install")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
         "-w", str(folder / "dist")],
        check=True, timeout=BOUND, cwd=folder,
    )
    # the build must leave the checkout as it was
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    wheel = next((folder / "dist").glob("ase_bodyorder-*.whl"))
    # The new environment sees the test environment's packages through a .pth file of
    # plain folders: `venv --system-site-packages` would give it the *base* Python's,
    # which inside a virtual environment (as most people install) lack everything. A
    # folder named in a .pth file is searched after the environment's own, and its own
    # .pth files (an editable install of this checkout) are not run: the wheel wins.
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True, timeout=BOUND)
    bin_dir = folder / "venv" / "bin"
    purelib = subprocess.run(
        [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, timeout=BOUND, capture_output=True, text=True,
    ).stdout.strip()
    parents = [*site.getsitepackages(), site.getusersitepackages()]
    (Path(purelib) / "test_environment.pth").write_text("\n".join(p for p in parents if Path(p).is_dir()) + "\n")
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=BOUND)
    return bin_dir


def _run(command, cwd, **kwargs):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=BOUND, **kwargs)


def test_the_wheel_is_what_runs(installed, tmp_path):
    site = installed.parent
    code = "import ase_bodyorder, ase_bodyorder.ipi as i; print(ase_bodyorder.__file__); print(i.PLUGIN)"
    result = _run([str(installed / "python"), "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    package, plugin = result.stdout.split()
    assert Path(package).is_relative_to(site), package  # not the checkout
    path = _run([str(installed / "ase-bodyorder"), "ipi", "plugin-path"], tmp_path).stdout.strip()
    assert path == plugin and Path(path).is_file() and Path(path).is_relative_to(site)
    models = _run([str(installed / "ase-bodyorder"), "models"], tmp_path)
    assert "pet-h-fci (default)" in models.stdout and str(site) in models.stdout


def test_socket_run_with_the_installed_driver(installed, tmp_path):
    address = f"wheel_{os.getpid()}"
    shutil.copy(EXAMPLES / "h16.xyz", tmp_path)
    text = (EXAMPLES / "nvt_socket.xml").read_text()
    text = text.replace("<total_steps>1000</total_steps>", "<total_steps>5</total_steps>")
    text = text.replace("<address>bodyorder</address>", f"<address>{address}</address>")
    (tmp_path / "input.xml").write_text(text)
    log = open(tmp_path / "ipi.log", "w")
    # the test environment's i-pi (its folder is on PATH only when it is activated)
    i_pi = shutil.which("i-pi", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    server = subprocess.Popen([i_pi, "input.xml"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.time() + BOUND
        while not os.path.exists(f"/tmp/ipi_{address}"):
            assert server.poll() is None and time.time() < deadline, "i-PI did not open its socket"
            time.sleep(0.1)
        # the installed driver, through the PES file of the installed package
        plugin = _run([str(installed / "ase-bodyorder"), "ipi", "plugin-path"], tmp_path).stdout.strip()
        driver = _run(
            # i-PI's driver script, run by the new environment's Python: the wheel's package
            [str(installed / "python"),
             shutil.which("i-pi-py_driver", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"),
             "-m", "custom", "-P", plugin, "-u", "-a", address, "-o", "template=h16.xyz,max_order=2,threads=1"],
            tmp_path,
            env={**os.environ, "PATH": f"{installed}:{os.environ['PATH']}"},
        )
        server.wait(timeout=BOUND)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=BOUND)
    text = (tmp_path / "ipi.log").read_text()
    assert "I-PI reports success" in text, text[-2000:] + driver.stderr[-2000:]
    out = np.loadtxt(tmp_path / "nvt.out", ndmin=2)
    assert len(out) >= 1 and np.isfinite(out).all()
    extras = (tmp_path / "nvt.extras_0").read_text()
    assert "#EXTRAS(body_order_energies)#" in extras


def test_inprocess_example_from_another_folder(installed, tmp_path):
    before = sorted(p.name for p in EXAMPLES.iterdir())
    relative = os.path.relpath(EXAMPLES / "nvt_direct.xml", tmp_path)
    result = _run(
        [str(installed / "ase-bodyorder"), "ipi", "run", relative, "--steps", "3", "--log", "run.h5",
         "--threads", "1"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in EXAMPLES.iterdir()) == before  # nothing written beside the input
    assert (tmp_path / "nvt.out").exists() and (tmp_path / "RESTART").exists()
    info = _run([str(installed / "ase-bodyorder"), "info", "run.h5"], tmp_path)
    assert info.returncode == 0 and "frames:     3" in info.stdout, info.stdout + info.stderr

"""Any import order works: sevenn (or torch_geometric, which replaces torch.index_select)
before or after ase-bodyorder, SevenNet and metatomic models in one process. Each order
runs in a fresh interpreter, and every order gives the same energies."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("sevenn")

_SILICON = "from ase.build import bulk\nsi = bulk('Si', 'diamond', a=5.43)\n"
_HYDROGEN = "import ase\nh3 = ase.Atoms('H3', positions=[[0, 0, 0], [0, 0, 0.8], [0, 0.9, 0]])\n"
_OURS = "from ase_bodyorder import BodyOrderCalculator\n"
_SEVENN = "from sevenn.calculator import SevenNetCalculator\n"
_ENERGIES = (
    "si.calc = BodyOrderCalculator('sevennet-0', 2)\n"
    "h3.calc = BodyOrderCalculator('default', 2)\n"
    "print(si.get_potential_energy(), h3.get_potential_energy())\n"
)

ORDERS = {
    "sevenn, then ours": _SEVENN + _OURS + _SILICON + _HYDROGEN + _ENERGIES,
    "torch_geometric, then ours": "import torch_geometric\n" + _OURS + _SILICON + _HYDROGEN + _ENERGIES,
    "ours, then sevenn": _OURS + _SILICON + _HYDROGEN
    + "h3.calc = BodyOrderCalculator('default', 2)\nh3.get_potential_energy()\n" + _SEVENN + _ENERGIES,
    "ours, a metatomic model, then sevenn's own calculator": _OURS + _SILICON + _HYDROGEN
    + "h3.calc = BodyOrderCalculator('default', 2)\nh3.get_potential_energy()\n" + _SEVENN
    + "SevenNetCalculator('7net-0', device='cpu')\n" + _ENERGIES,
}


def _energies(code: str) -> list[float]:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return [float(v) for v in run.stdout.split()]


@pytest.fixture(scope="module")
def reference() -> list[float]:
    return _energies(_OURS + _SILICON + _HYDROGEN + _ENERGIES)  # ours alone


@pytest.mark.parametrize("order", ORDERS)
def test_every_import_order_works_and_agrees(order, reference):
    assert _energies(ORDERS[order]) == pytest.approx(reference, abs=1e-9)


def test_export_after_torch_geometric(tmp_path):
    code = (f"import torch_geometric\nfrom ase_bodyorder import export_truncated\n"
            f"export_truncated('pet-h-fci', 2, r'{tmp_path / 'k2.pt'}')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "k2.pt").is_file()

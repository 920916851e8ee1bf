"""The i-PI PES class: a body-order-truncated MLIP as an i-PI driver.

i-PI loads PES classes from a file (``-P FILE`` for ``i-pi-py_driver``, ``<pes_path>``
in ``<ffdirect>``); that file is ``ase_bodyorder/ipi_bodyorder.py``, whose path
``ase-bodyorder ipi plugin-path`` prints after any install. It only names this class,
so the code lives here, in the package (docs/ipi.md).

Options (``-o key=value,...`` or ``<parameters>{key: value, ...}</parameters>``; i-PI
parses numbers and booleans; no commas inside values):

- ``model``: metatomic ``.pt`` path, ``default`` or a shipped model's name
- ``template``: structure file ASE can read, giving the species and their order (required)
- ``max_order``: body order K >= 1 (required)
- ``cutoff``: locality radius in angstrom, or ``all`` for every subset (default: the model's)
- ``device``: torch device (default: the model's preferred)
- ``skin``: reuse the enumeration until an atom moves more than skin/2 (angstrom)
- ``threads``: torch threads of this process (default: torch's own choice). Several
  drivers on one machine must share its cores: give each cores / drivers threads.
- ``scheduler``: address of a Dask scheduler (``tcp://host:8786``) whose workers
  evaluate the subclusters (the ``distributed`` extra; docs/distributed.md)

With ``<batch_size>n</batch_size>``, i-PI sends n beads at once and
:meth:`BodyOrderDriver.compute` evaluates the subclusters of all of them in shared
packed model calls.

Extras returned per bead (JSON, read by i-PI's ``<trajectory extra_type=...>``):
``body_order_energies`` (dE_1..dE_K, eV), ``truncated_energies`` (E^(1)..E^(K), eV) and
``subcluster_counts``.
"""

from __future__ import annotations

import json

import numpy as np
from ipi.pes.dummy import Dummy_driver
from ipi.utils.units import unit_to_internal, unit_to_user

from .errors import InputError

__all__ = ["BodyOrderDriver", "EXTRAS_KEYS", "INSTANCES", "set_threads"]

#: extras keys, each a list per bead
EXTRAS_KEYS = ("body_order_energies", "truncated_energies", "subcluster_counts")

#: drivers created in this process (in-process runs read their last results)
INSTANCES: list = []


def set_threads(threads: int) -> None:
    """Torch's intra-op threads for this process (a positive number)."""
    import torch

    if threads < 1:
        raise InputError(f"threads must be a positive number, got {threads}")
    torch.set_num_threads(threads)


class BodyOrderDriver(Dummy_driver):
    """i-PI PES evaluating a model truncated at body order K."""

    def __init__(
        self,
        template=None,
        max_order=None,
        model="default",
        cutoff=None,
        device=None,
        skin=0.0,
        threads=None,
        scheduler=None,
        *args,
        **kwargs,
    ):
        self.template = template
        self.max_order = max_order
        self.model = model
        self.cutoff = cutoff
        self.device = device
        self.skin = skin
        self.threads = threads
        self.scheduler = scheduler
        #: the Dask client, with ``scheduler``
        self.client = None
        #: recent evaluations as (positions in angstrom, results in ASE units); i-PI may
        #: call once per bead or once per batch, so in-process loggers match by position
        self.recent: list[tuple[np.ndarray, dict]] = []
        super().__init__(*args, **kwargs)  # calls check_parameters
        INSTANCES.append(self)

    def check_parameters(self):
        import ase.io

        from ase_bodyorder.calculator import MODEL_CUTOFF, BodyOrderCalculator

        unknown = {k: v for k, v in self.kwargs.items() if k not in ("verbose", "verbosity")}
        if unknown or self.args:
            raise InputError(
                f"ipi_bodyorder: unknown option(s) {sorted(unknown) or list(self.args)}; known: "
                "model, template, max_order, cutoff, device, skin, threads, scheduler"
            )
        if self.template is None:
            raise InputError("ipi_bodyorder: the 'template' option (a structure file) is required")
        if self.max_order is None:
            raise InputError("ipi_bodyorder: the 'max_order' option (K >= 1) is required")
        try:
            self.template_atoms = ase.io.read(str(self.template))
        except FileNotFoundError:
            raise InputError(f"ipi_bodyorder: template '{self.template}' does not exist") from None
        except Exception as error:
            raise InputError(f"ipi_bodyorder: cannot read template '{self.template}': {error}") from None
        if self.threads not in (None, "None"):
            set_threads(int(self.threads))
        # "model": the model's radius; "all": every subset (the command line's --cutoff words)
        if self.cutoff in (None, "None", "model"):
            cutoff = MODEL_CUTOFF
        else:
            cutoff = None if str(self.cutoff).lower() == "all" else float(self.cutoff)
        device = None if self.device in (None, "None") else str(self.device)
        if self.scheduler not in (None, "None"):
            from ase_bodyorder.backends.dask import connect

            try:
                self.client = connect(str(self.scheduler))
            except (OSError, ImportError) as error:
                raise InputError(f"ipi_bodyorder: {error}") from None
        try:
            self.calculator = BodyOrderCalculator(
                str(self.model), int(self.max_order), cutoff=cutoff, device=device, skin=float(self.skin),
                client=self.client,
            )
            # species of the template against the model, before any step
            self.calculator.backend.check_species(self.template_atoms.numbers)
        except (FileNotFoundError, ValueError, TypeError) as error:
            raise InputError(f"ipi_bodyorder: {error}") from None

    def _structure(self, cell, pos):
        atoms = self.template_atoms.copy()
        positions = unit_to_user("length", "angstrom", np.asarray(pos).reshape(-1, 3))
        if len(positions) != len(atoms):
            raise InputError(
                f"ipi_bodyorder: i-PI sent {len(positions)} atoms, the template has {len(atoms)}"
            )
        atoms.positions = positions
        # i-PI sends the cell with vectors as columns
        cell_rows = unit_to_user("length", "angstrom", np.asarray(cell).T)
        if atoms.pbc.any():
            atoms.cell = cell_rows
        return atoms

    def _to_ipi(self, atoms, result):
        energy = unit_to_internal("energy", "electronvolt", result["energy"])
        forces = unit_to_internal("force", "ev/ang", result["forces"]).reshape(-1)
        virial = np.zeros((3, 3))
        if "stress" in result:
            from ase.stress import voigt_6_to_full_3x3_stress

            virial_ev = -voigt_6_to_full_3x3_stress(result["stress"]) * atoms.get_volume()
            virial = unit_to_internal("energy", "electronvolt", virial_ev.T)
        extras = json.dumps({key: np.asarray(result[key]).tolist() for key in EXTRAS_KEYS})
        return float(energy), np.asarray(forces, dtype=np.float64), np.asarray(virial, dtype=np.float64), extras

    def results_at(self, positions: np.ndarray, tolerance: float = 1e-6) -> dict:
        """The results of the most recent evaluation at these positions (angstrom)."""
        for evaluated, result in reversed(self.recent):
            if evaluated.shape == positions.shape and np.abs(evaluated - positions).max() < tolerance:
                return result
        raise LookupError("no recent evaluation at these positions")

    def compute_structure(self, cell, pos):
        return self.compute([cell], [pos])[0]

    def compute(self, cell, pos):
        """One structure, or (batched mode) lists of cells and positions."""
        batched = isinstance(cell, list)
        cells, positions = (cell, pos) if batched else ([cell], [pos])
        structures = [self._structure(c, p) for c, p in zip(cells, positions)]
        stress = all(atoms.pbc.all() for atoms in structures)
        results = self.calculator.compute_many(structures, forces=True, stress=stress)
        self.recent = (self.recent + [(a.positions.copy(), r) for a, r in zip(structures, results)])[-256:]
        out = [self._to_ipi(atoms, result) for atoms, result in zip(structures, results)]
        return out if batched else out[0]

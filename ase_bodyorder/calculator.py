"""BodyOrderCalculator: an MLIP's energy, forces, stress truncated at body order K.

Plan (which subclusters), evaluate (a backend: their energies and forces, packed),
assemble (fixed linear combinations of them): the three steps of mbe.py, joined
into an ASE calculator (docs/design.md).
"""

from __future__ import annotations

import os
import sys
import time

import ase
import numpy as np
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)
from ase.stress import full_3x3_to_voigt_6_stress

from .backends.base import ClusterBatch
from .backends.select import make_backend  # noqa: F401 (also importable from here)
from .checks import check_locality
from .errors import InputError, RunError, SettingError
from .expansion import check_fragments
from .mbe import Subclusters, assemble, evaluate_batch, plan_subclusters

__all__ = ["BodyOrderCalculator", "MODEL_CUTOFF"]

#: default ``cutoff``: the largest neighbour-list cutoff the model requests
MODEL_CUTOFF = "model"
#: subcluster atoms in one calculation from which ``progress`` announces the expansion
LARGE_EXPANSION_ATOMS = 50_000

#: settings whose change makes the cached enumeration and the last results stale
_PLAN_PARAMETERS = {"max_order", "cutoff", "fragments", "skin", "max_subclusters"}
#: what a calculator is made with and cannot change: make a new one
_FIXED = {"model", "device", "variant", "extensions_directory", "dtype", "client"}


def _setting(name: str, doc: str) -> property:
    """A plain attribute backed by ``parameters``: assigning it goes through set()."""

    def get(self):
        return self.parameters[name]

    def put(self, value):
        self.set(**{name: value})

    return property(get, put, doc=doc)


class BodyOrderCalculator(Calculator):
    """ASE calculator giving a model's energy truncated at body order K.

    E^(K) = sum over connected sets S of at most K bodies of eps(S), where eps(S) is the
    inclusion-exclusion of the model's energies of the isolated subclusters of S
    (docs/design.md). Forces, stress and per-atom energies are the same linear
    combination of subcluster quantities. Each calculation is the three public steps of
    :mod:`ase_bodyorder.mbe`: plan, evaluate (packed), assemble.

    :param model: a metatomic model (path to an exported ``.pt``, ``"default"`` or a
        shipped model's name, or a loaded ``AtomisticModel``), a SevenNet model
        (``"sevennet-0"`` or another pretrained name, or a ``.pth`` checkpoint; needs
        the ``sevennet`` extra), a CHGNet model (``"chgnet"``, ``"chgnet-r2scan"``, ...;
        the ``chgnet`` extra), a native MACE model (a mace-torch ``.model`` file; the
        ``mace`` extra, docs/mace.md), any ASE calculator, a batched function of a list of
        isolated ``ase.Atoms`` returning ``(energies, forces)`` (its locality radius
        given as ``cutoff``, as for an ASE calculator; or wrap it as
        :class:`~ase_bodyorder.backends.callable.BatchedCallableBackend`), or a
        :class:`~ase_bodyorder.backends.Backend`
    :param max_order: body order K >= 1, or None for the plain model (no truncation)
    :param cutoff: locality radius in angstrom: bodies with no atoms closer than this do
        not interact. Default ``"model"`` (:data:`MODEL_CUTOFF`): the largest
        neighbour-list cutoff a metatomic model requests (an ASE calculator or a bare
        function needs it given). ``None`` takes every subset: exact for any model,
        combinatorial cost, finite systems only.
    :param fragments: lists of atom indices (disjoint, covering every atom) to use as
        bodies instead of atoms, e.g. molecules
    :param device: torch device (default: a metatomic model's preferred device; ``"cpu"``
        for SevenNet)
    :param variant: the model's energy variant (its output ``energy/<variant>``),
        metatomic only; what metatomic's ASE calculator takes as
        ``variants={"energy": variant}`` (only the energy is read here). For a MACE
        model, the head of a multi-head model
    :param extensions_directory: where a metatomic model's compiled extensions live
    :param dtype: ``"float64"`` or ``"float32"`` for SevenNet, CHGNet and MACE models (default float64);
        a metatomic model's dtype is fixed at export
    :param skin: extra radius (A) for the body graph; the enumeration is then reused
        across calls until an atom moves more than skin/2 (exact: the extra subsets
        have eps = 0)
    :param max_subclusters: refuse, before evaluating anything, an expansion that needs
        more subclusters than this
    :param max_atoms_per_chunk: bound on the atoms evaluated in one model call (memory);
        default: the backend's choice (16384 atoms; 2048 for SevenNet and 512 for MACE,
        whose equivariant features take far more memory per atom)
    :param check_locality: probe at start-up that fragments just beyond ``cutoff`` do
        not interact (and that packing is valid)
    :param forces_with_energy: compute forces whenever the energy is asked for, so that
        ASE's later ``get_forces()`` costs nothing (as metatomic's calculator does)
    :param progress: show on stderr a progress bar inside a calculation that takes more
        than a few seconds, and the subclusters of a large expansion before it is evaluated
    :param client: a ``dask.distributed.Client``: each step's subclusters are evaluated
        in chunks on its workers, which load the model once (a path or name: every
        worker must reach the file; an ASE calculator is sent to them once). Results
        equal the serial ones to round-off (docs/distributed.md)

    The settings are ASE ``parameters``: ``calc.set(max_order=2)``, or assigning
    ``calc.max_order = 2``, changes them and discards what they invalidate (results,
    the cached enumeration, the locality probe); ``calc.todict()`` lists them. The
    model itself is fixed: make a new calculator for another model.

    ``results`` holds ``energy``, ``free_energy``, ``forces``, ``energies`` (per atom:
    each eps(S) shared equally among the atoms of S), ``stress`` (periodic cells) and,
    when truncated, ``body_order_energies`` (dE_1..dE_K, eV), ``truncated_energies``
    (E^(1)..E^(K)), ``subcluster_counts`` (connected subsets per order) and
    ``per_atom_body_order_energies`` (n_atoms x K).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    default_parameters = {
        "max_order": None,
        "cutoff": MODEL_CUTOFF,
        "fragments": None,
        "skin": 0.0,
        "max_subclusters": 5_000_000,
        "max_atoms_per_chunk": None,
        "check_locality": True,
        "forces_with_energy": True,
    }

    max_order = _setting("max_order", "body order K >= 1, or None for the plain model")
    fragments = _setting("fragments", "atom-index lists used as bodies, or None (atoms)")
    skin = _setting("skin", "extra radius (A) that lets the enumeration be reused")
    max_subclusters = _setting("max_subclusters", "largest expansion evaluated")
    max_atoms_per_chunk = _setting("max_atoms_per_chunk", "atoms per model call")
    check_locality = _setting("check_locality", "probe the model's locality at start-up")
    forces_with_energy = _setting("forces_with_energy", "compute forces with every energy")

    def __init__(
        self,
        model,
        max_order: int | None = None,
        *,
        device: str | None = None,
        variant: str | None = None,
        extensions_directory: str | os.PathLike | None = None,
        dtype: str | None = None,
        client=None,
        progress: bool = False,
        **kwargs,
    ):
        # the settings (cutoff, fragments, skin, ...) come in **kwargs: their defaults
        # are written once, in default_parameters, which ASE's Calculator starts from
        self.backend = make_backend(
            model, device, variant=variant, extensions_directory=extensions_directory, dtype=dtype
        )
        #: how the model was given, and the settings that load it (workers use both)
        self.model_source = model
        self.model_settings = {
            "device": None if device is None else str(device),
            "variant": variant,
            "extensions_directory": None if extensions_directory is None else str(extensions_directory),
            "dtype": dtype,
        }
        if client is not None:
            from .backends.dask import DaskBackend

            self.backend = DaskBackend.from_model(client, model, self.backend, **self.model_settings)
        self._checked_species: set[int] = set()
        self._one_body: dict[int, float] = {}
        self._plan_cache: dict[int, tuple[ase.Atoms, Subclusters]] = {}
        self._fragments_checked_for: int | None = None
        #: seconds spent in each stage of the last calculation
        self.timings: dict[str, float] = {}
        #: on stderr: a progress bar inside a calculation that takes more than a few
        #: seconds, and the size of an expansion of more than LARGE_EXPANSION_ATOMS atoms
        self.progress = bool(progress)
        self._announced = False
        super().__init__(max_order=max_order, **kwargs)
        if "cutoff" not in kwargs:  # the default "model" needs a model that says its radius
            self._checked_setting("cutoff", self.parameters["cutoff"])

    # ------------------------------------------------------------------------------
    # settings, as ASE calculators keep them

    @property
    def cutoff(self) -> float | None:
        """The locality radius in use (A): the model's when ``cutoff="model"``."""
        value = self.parameters["cutoff"]
        return self.backend.default_cutoff if value == MODEL_CUTOFF else value

    @cutoff.setter
    def cutoff(self, value) -> None:
        self.set(cutoff=value)

    def set(self, **kwargs) -> dict:
        """Change settings; returns those that changed. Results, the cached
        enumeration and the locality probe are discarded when a setting they depend on
        changes."""
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        fixed = sorted(set(unknown) & _FIXED)
        if fixed:
            raise SettingError(
                f"{', '.join(fixed)}: the model, device and client are fixed: create a new BodyOrderCalculator"
            )
        if unknown:
            raise SettingError(
                f"unknown setting(s) {unknown}; BodyOrderCalculator takes {sorted(self.default_parameters)}"
            )
        checked = {key: self._checked_setting(key, value) for key, value in kwargs.items()}
        # every value is plain Python (numbers, strings, lists): compare with ==, since
        # ASE's own comparison fails on ragged lists such as fragments
        changed = {k: v for k, v in checked.items() if k not in self.parameters or self.parameters[k] != v}
        self.parameters.update(changed)
        if changed.keys() & _PLAN_PARAMETERS:
            self.reset()
            self._plan_cache.clear()
        if "cutoff" in changed:
            self._checked_species.clear()  # probe the new cutoff
        if "fragments" in changed:
            self._fragments_checked_for = None
        return changed

    def _checked_setting(self, key: str, value):
        """``value`` validated (and made plain: ints, floats, lists) for ``key``."""
        if key == "max_order":
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SettingError(f"max_order must be an integer >= 1 or None, got {value!r}")
            if value < 1:
                raise InputError(f"max_order must be >= 1, got {value}")
            return int(value)
        if key == "cutoff":
            if value is None:
                return None
            if isinstance(value, str) and value.lower() == "all":
                return None  # every subset, as the command line's --cutoff all
            if isinstance(value, str):
                if value != MODEL_CUTOFF:
                    raise InputError(f"cutoff must be a number of angstrom, {MODEL_CUTOFF!r} or None, got {value!r}")
                if self.backend.default_cutoff is None:
                    raise InputError(
                        f"{self.backend.describe().get('model', 'this model')} does not say how "
                        "far it reaches: give cutoff=... (angstrom), or cutoff=None for every subset"
                    )
                return MODEL_CUTOFF
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
                np.isfinite(value) and value > 0
            ):
                raise InputError(f"cutoff must be a positive number of angstrom, {MODEL_CUTOFF!r} or None, got {value!r}")
            return float(value)
        if key == "fragments":
            return None if value is None else [[int(a) for a in f] for f in value]
        if key == "skin":
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"skin must be >= 0, got {value}")
            return float(value)
        if key == "max_atoms_per_chunk":
            if value is None:
                return None
            if int(value) < 1:
                raise InputError(f"max_atoms_per_chunk must be >= 1, got {value}")
            return int(value)
        if key == "max_subclusters":
            return None if value is None else int(value)
        return bool(value)  # check_locality, forces_with_energy

    def todict(self, skip_default: bool = True) -> dict:
        """The model and the settings as plain JSON-ready values (without settings left
        at their defaults, as ASE does), such that ``BodyOrderCalculator(**todict())``
        makes the same calculator. A model given as an object (a loaded model, an ASE
        calculator, a backend) cannot be written down: that is refused, as metatomic's
        calculator refuses a model that is not a file."""
        if not isinstance(self.model_source, (str, os.PathLike)):
            raise RunError(
                f"todict() cannot name a model given as a {type(self.model_source).__name__} object: "
                "make the BodyOrderCalculator with a model file or name to use todict()"
            )
        model = {"model": str(self.model_source)}
        model.update({k: v for k, v in self.model_settings.items() if v is not None})
        settings = {
            key: value
            for key, value in self.parameters.items()
            if not (skip_default and value == self.default_parameters.get(key, object()))
        }
        return {**model, **settings}

    @property
    def client(self):
        """The ``dask.distributed.Client`` whose workers evaluate the subclusters, or None."""
        return getattr(self.backend, "client", None)

    def describe(self) -> dict:
        """Settings and model metadata, for logs."""
        info = dict(self.backend.describe())
        info.update(
            max_order=-1 if self.max_order is None else self.max_order,
            cutoff=-1.0 if self.cutoff is None else self.cutoff,
            skin=self.skin,
        )
        return info

    # ------------------------------------------------------------------------------

    def _validate(self, atoms: ase.Atoms) -> None:
        positions = atoms.positions
        if not np.all(np.isfinite(positions)):
            bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
            raise InputError(f"positions of atoms {bad[:10].tolist()} are not finite (NaN or inf)")
        if atoms.pbc.any() and not np.all(np.isfinite(atoms.cell.array)):
            raise InputError("the cell holds non-finite values")
        if atoms.pbc.any() and abs(atoms.cell.volume) < 1e-12 and atoms.pbc.all():
            raise InputError("periodic cell has zero volume")
        if self.fragments is not None and self._fragments_checked_for != len(atoms):
            check_fragments(self.fragments, len(atoms))  # once, not at every MD step
            self._fragments_checked_for = len(atoms)
        self.backend.check_species(atoms.numbers)
        new = set(atoms.numbers.tolist()) - self._checked_species
        if new and self.check_locality and self.cutoff is not None:
            check_locality(self.backend, np.array(sorted(new | self._checked_species)), self.cutoff)
        self._checked_species |= new

    def _plan(self, atoms: ase.Atoms, slot: int = 0) -> Subclusters:
        """The subclusters of ``atoms``; with a skin, the enumeration is reused while
        atoms move less than skin/2 since it was made (one cache per slot: each bead of
        a batch has its own)."""
        cache = self._plan_cache.get(slot)
        if cache is not None and self.skin > 0:
            old_atoms, subclusters = cache
            if (
                len(old_atoms) == len(atoms)
                and np.array_equal(old_atoms.numbers, atoms.numbers)
                and np.array_equal(old_atoms.pbc, atoms.pbc)
                and np.allclose(old_atoms.cell.array, atoms.cell.array, rtol=0, atol=1e-12)
                and np.max(np.linalg.norm(atoms.positions - old_atoms.positions, axis=1), initial=0)
                < 0.5 * self.skin
            ):
                return subclusters.at(atoms)
        cutoff = None if self.cutoff is None else self.cutoff + self.skin
        subclusters = plan_subclusters(
            atoms,
            self.max_order,
            cutoff,
            fragments=self.fragments,
            max_subclusters=self.max_subclusters,
            one_body_per_species=True,
        )
        self._plan_cache[slot] = (atoms.copy(), subclusters)
        return subclusters

    def _announce(self, planned: list[Subclusters], batch: ClusterBatch, chunk: int) -> None:
        """Say, before the first long evaluation, how large the expansion is."""
        from tqdm.auto import tqdm

        self._announced = True
        counts = np.sum([s.counts for s in planned], axis=0).tolist()
        calls = -(-batch.n_atoms // chunk)
        tqdm.write(
            f"expansion: {' + '.join(map(str, counts))} subclusters of orders 1..{len(counts)}, "
            f"{batch.n_atoms} atoms in about {calls} model calls of up to {chunk} atoms",
            file=sys.stderr,
        )

    def _one_body_energies(self, species: list[int]) -> dict[int, float]:
        """Isolated-atom energies: they depend on the species only, computed once."""
        missing = sorted(set(species) - set(self._one_body))
        if missing:
            energies, _ = self.backend.evaluate(ClusterBatch.isolated_atoms(missing), forces=False)
            self._one_body.update(zip(missing, energies.tolist()))
        return {z: self._one_body[z] for z in species}

    # ------------------------------------------------------------------------------

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._validate(atoms)
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        # forces with the energy only from a backend that gives them (a function may not)
        want_forces = "forces" in properties or want_stress or (self.forces_with_energy and self.backend.gives_forces)
        if self.max_order is None:
            self._calculate_plain(atoms, want_forces, want_stress)
        else:
            self.results.update(self._truncated([atoms], want_forces, want_stress)[0])

    def _calculate_plain(self, atoms: ase.Atoms, forces: bool, stress: bool) -> None:
        start = time.perf_counter()
        result = self.backend.evaluate_full(atoms, forces, stress)
        self.results["energy"] = self.results["free_energy"] = result["energy"]
        if "energies" in result:
            self.results["energies"] = result["energies"]
        if forces:
            self.results["forces"] = result["forces"]
        if stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(result["stress"])
        self.timings = {"model": time.perf_counter() - start}

    def compute_many(
        self, structures: list[ase.Atoms], forces: bool = True, stress: bool = False
    ) -> list[dict]:
        """Results for several structures (e.g. the beads of a path integral), with the
        subclusters of all of them evaluated together in packed model calls.

        Returns one ``results``-like dict per structure. Stress needs 3D-periodic cells.
        """
        if self.max_order is None:
            raise InputError("compute_many needs a truncated calculator (max_order >= 1)")
        for atoms in structures:
            self._validate(atoms)
            if stress and not atoms.pbc.all():
                raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        return self._truncated(structures, forces or stress, stress)

    def _truncated(self, structures: list[ase.Atoms], forces: bool, stress: bool) -> list[dict]:
        t0 = time.perf_counter()
        planned = [self._plan(atoms, slot) for slot, atoms in enumerate(structures)]
        t1 = time.perf_counter()
        # every subcluster of every structure in one batch, evaluated in chunks
        batch = ClusterBatch(
            np.concatenate([s.positions for s in planned]),
            np.concatenate([s.numbers for s in planned]),
            np.concatenate([[0], np.cumsum(np.concatenate([np.diff(s.ptr) for s in planned]))]),
        )
        t2 = time.perf_counter()
        chunk = self.max_atoms_per_chunk or self.backend.preferred_chunk_atoms
        if self.progress and not self._announced and batch.n_atoms >= LARGE_EXPANSION_ATOMS:
            self._announce(planned, batch, chunk)
        energies, cluster_forces = evaluate_batch(self.backend, batch, forces, chunk, progress=self.progress)
        t3 = time.perf_counter()
        one_body = self._one_body_energies(sorted({z for s in planned for z in s.one_body_species()}))
        results = []
        cluster_offset = atom_offset = 0
        for subclusters in planned:
            m, p = len(subclusters), int(subclusters.ptr[-1])
            result = assemble(
                subclusters,
                energies[cluster_offset : cluster_offset + m],
                None if cluster_forces is None else cluster_forces[atom_offset : atom_offset + p],
                one_body_energies=one_body,
                stress=stress,
            )
            del result["eps"]  # ragged: not an ASE result (assemble() gives it)
            results.append(result)
            cluster_offset += m
            atom_offset += p
        t4 = time.perf_counter()
        self.timings = {"enumerate": t1 - t0, "pack": t2 - t1, "model": t3 - t2, "assemble": t4 - t3}
        return results

"""BodyOrderCalculator: an MLIP's energy, forces, stress truncated at body order K.

Plan (expansion.py: which subclusters), compute (a backend: their energies and
forces), assemble (here: fixed linear combinations of them), as in DESIGN.md sections
1-6.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import ase
import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .backends.ase_calculator import AseCalculatorBackend
from .backends.base import Backend, ClusterBatch
from .checks import check_locality
from .expansion import ExpansionPlan, build_body_graph, check_fragments, plan_expansion

__all__ = ["BodyOrderCalculator", "MODEL_CUTOFF", "make_backend"]


class _ModelCutoff:
    def __repr__(self) -> str:
        return "MODEL_CUTOFF"


#: default ``cutoff``: the largest neighbour-list cutoff the model requests
MODEL_CUTOFF = _ModelCutoff()


def make_backend(model, device: str | None = None) -> Backend:
    """A backend for a metatomic model (path, ``"default"``, loaded model), any ASE
    calculator, or a ready :class:`~ase_bodyorder.backends.Backend`."""
    if isinstance(model, Backend):
        return model
    if isinstance(model, Calculator):
        return AseCalculatorBackend(model)
    from .backends.metatomic import MetatomicBackend
    from .models import resolve_model

    if isinstance(model, (str, os.PathLike)):
        model = resolve_model(model)
    return MetatomicBackend(model, device=device)


@dataclass
class _Layout:
    """The atoms of every subcluster of a plan, concatenated: sizes 2..K (atoms as
    bodies: the 1-body energies come from a per-species cache) or 1..K (fragments)."""

    first_order: int
    parent: np.ndarray  # (P,) home-cell atom of each subcluster atom
    shift: np.ndarray  # (P, 3) lattice shift of each subcluster atom
    ptr: np.ndarray  # (M + 1,)
    order_of_cluster: np.ndarray  # (M,) body count of each subcluster
    atom_counts: list[np.ndarray]  # per order: number of atoms in each subset


def _layout(plan: ExpansionPlan, atoms_as_bodies: bool) -> _Layout:
    first = 2 if atoms_as_bodies else 1
    graph = plan.graph
    body_sizes = np.array([len(a) for a in graph.atoms_of_body])
    body_start = np.concatenate([[0], np.cumsum(body_sizes)])
    body_atoms = np.concatenate(graph.atoms_of_body)
    parents, shifts, sizes, orders = [], [], [], []
    atom_counts = []
    for k in range(1, plan.max_order + 1):
        body, shift = plan.images(k)  # (M, k), (M, k, 3)
        counts = body_sizes[body].sum(axis=1)
        atom_counts.append(counts)
        if k < first or len(body) == 0:
            continue
        flat_body = body.reshape(-1)
        n = body_sizes[flat_body]
        # every atom of every member body, members in order
        member = np.repeat(np.arange(len(flat_body)), n)
        within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        atom = body_atoms[body_start[flat_body][member] + within]
        parents.append(atom)
        shifts.append(shift.reshape(-1, 3)[member] + graph.atom_offsets[atom])
        sizes.append(counts)
        orders.append(np.full(len(body), k))
    if parents:
        parent = np.concatenate(parents)
        shift = np.concatenate(shifts)
        size = np.concatenate(sizes)
        order = np.concatenate(orders)
    else:
        parent, shift = np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
        size, order = np.zeros(0, np.int64), np.zeros(0, np.int64)
    ptr = np.concatenate([[0], np.cumsum(size)])
    return _Layout(first, parent, shift, ptr, order, atom_counts)


class BodyOrderCalculator(Calculator):
    """ASE calculator giving a model's energy truncated at body order K.

    E^(K) = sum over connected sets S of at most K bodies of eps(S), where eps(S) is the
    inclusion-exclusion of the model's energies of the isolated subclusters of S
    (DESIGN.md section 1). Forces, stress and per-atom energies are the same linear
    combination of subcluster quantities.

    :param model: a metatomic model (path to an exported ``.pt``, ``"default"`` for the
        shipped model, or a loaded ``AtomisticModel``), any ASE ``Calculator``, or a
        :class:`~ase_bodyorder.backends.Backend`
    :param max_order: body order K >= 1, or None for the plain model (no truncation)
    :param cutoff: locality radius in angstrom: bodies with no atoms closer than this do
        not interact. Default: the largest neighbour-list cutoff a metatomic model
        requests (an ASE calculator needs it given). ``None`` takes every subset: exact
        for any model, combinatorial cost, finite systems only.
    :param fragments: lists of atom indices (disjoint, covering every atom) to use as
        bodies instead of atoms, e.g. molecules
    :param device: torch device for metatomic models
    :param skin: extra radius (A) for the body graph; the enumeration is then reused
        across calls until an atom moves more than skin/2 (exact: the extra subsets
        have eps = 0)
    :param max_subclusters: refuse, before evaluating anything, an expansion that needs
        more subclusters than this
    :param max_atoms_per_chunk: bound on the atoms evaluated in one model call (memory)
    :param check_locality: probe at start-up that fragments just beyond ``cutoff`` do
        not interact (and that packing is valid)
    :param forces_with_energy: compute forces whenever the energy is asked for, so that
        ASE's later ``get_forces()`` costs nothing (as metatomic's calculator does)

    ``results`` holds ``energy``, ``free_energy``, ``forces``, ``energies`` (per atom:
    each eps(S) shared equally among the atoms of S), ``stress`` (periodic cells) and,
    when truncated, ``body_order_energies`` (dE_1..dE_K, eV), ``truncated_energies``
    (E^(1)..E^(K)), ``subcluster_counts`` (connected subsets per order) and
    ``per_atom_body_order_energies`` (n_atoms x K).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model,
        max_order: int | None = None,
        *,
        cutoff: float | None | _ModelCutoff = MODEL_CUTOFF,
        fragments: list[list[int]] | None = None,
        device: str | None = None,
        skin: float = 0.0,
        max_subclusters: int | None = 5_000_000,
        max_atoms_per_chunk: int = 16384,
        check_locality: bool = True,
        forces_with_energy: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if max_order is not None:
            if isinstance(max_order, bool) or not isinstance(max_order, (int, np.integer)):
                raise TypeError(f"max_order must be an integer >= 1 or None, got {max_order!r}")
            if max_order < 1:
                raise ValueError(f"max_order must be >= 1, got {max_order}")
            max_order = int(max_order)
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        if max_atoms_per_chunk < 1:
            raise ValueError(f"max_atoms_per_chunk must be >= 1, got {max_atoms_per_chunk}")
        self.backend = make_backend(model, device)
        if cutoff is MODEL_CUTOFF:
            cutoff = self.backend.default_cutoff
            if cutoff is None:
                raise ValueError(
                    f"{self.backend.describe().get('model', 'this model')} does not say how "
                    "far it reaches: give cutoff=... (angstrom), or cutoff=None for every subset"
                )
        elif cutoff is not None and not (np.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive number of angstrom or None, got {cutoff!r}")
        self.max_order = max_order
        self.cutoff = None if cutoff is None else float(cutoff)
        self.fragments = None if fragments is None else [list(map(int, f)) for f in fragments]
        self.skin = float(skin)
        self.max_subclusters = max_subclusters
        self.max_atoms_per_chunk = int(max_atoms_per_chunk)
        self.check_locality = check_locality
        self.forces_with_energy = bool(forces_with_energy)
        self._checked_species: set[int] = set()
        self._one_body: dict[int, float] = {}
        self._plan_cache: dict[int, tuple] = {}
        self._fragments_checked_for: int | None = None
        #: seconds spent in each stage of the last calculation
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------------------

    def describe(self) -> dict:
        """Settings and model metadata, for logs."""
        info = dict(self.backend.describe())
        info.update(
            max_order=-1 if self.max_order is None else self.max_order,
            cutoff=-1.0 if self.cutoff is None else self.cutoff,
            skin=self.skin,
        )
        return info

    def _validate(self, atoms: ase.Atoms) -> None:
        positions = atoms.positions
        if not np.all(np.isfinite(positions)):
            bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
            raise ValueError(f"positions of atoms {bad[:10].tolist()} are not finite (NaN or inf)")
        if atoms.pbc.any() and not np.all(np.isfinite(atoms.cell.array)):
            raise ValueError("the cell holds non-finite values")
        if atoms.pbc.any() and abs(atoms.cell.volume) < 1e-12 and atoms.pbc.all():
            raise ValueError("periodic cell has zero volume")
        if self.fragments is not None and self._fragments_checked_for != len(atoms):
            check_fragments(self.fragments, len(atoms))  # once, not at every MD step
            self._fragments_checked_for = len(atoms)
        self.backend.check_species(atoms.numbers)
        new = set(atoms.numbers.tolist()) - self._checked_species
        if new and self.check_locality and self.cutoff is not None:
            check_locality(self.backend, np.array(sorted(new | self._checked_species)), self.cutoff)
        self._checked_species |= new

    def _plan(self, atoms: ase.Atoms, slot: int = 0) -> tuple[ExpansionPlan, _Layout]:
        """The enumeration for ``atoms``; with a skin, reused while atoms move less than
        skin/2 since the last one (one cache per slot: each bead of a batch has its own)."""
        cache = self._plan_cache.get(slot)
        if cache is not None and self.skin > 0:
            old_atoms, plan, layout = cache
            if (
                len(old_atoms) == len(atoms)
                and np.array_equal(old_atoms.numbers, atoms.numbers)
                and np.array_equal(old_atoms.pbc, atoms.pbc)
                and np.allclose(old_atoms.cell.array, atoms.cell.array, rtol=0, atol=1e-12)
                and np.max(np.linalg.norm(atoms.positions - old_atoms.positions, axis=1), initial=0)
                < 0.5 * self.skin
            ):
                return plan, layout
        cutoff = None if self.cutoff is None else self.cutoff + self.skin
        graph = build_body_graph(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, self.fragments)
        plan = plan_expansion(graph, self.max_order, self.max_subclusters)
        layout = _layout(plan, atoms_as_bodies=self.fragments is None)
        self._plan_cache[slot] = (atoms.copy(), plan, layout)
        return plan, layout

    def _one_body_energies(self, numbers: np.ndarray) -> np.ndarray:
        """Isolated-atom energies: they depend on the species only, computed once."""
        missing = sorted(set(numbers.tolist()) - set(self._one_body))
        if missing:
            batch = ClusterBatch(np.zeros((len(missing), 3)), np.array(missing), np.arange(len(missing) + 1))
            energies, _ = self.backend.evaluate(batch, forces=False)
            self._one_body.update(zip(missing, energies.tolist()))
        return np.array([self._one_body[z] for z in numbers.tolist()])

    # ------------------------------------------------------------------------------

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._validate(atoms)
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        want_forces = "forces" in properties or want_stress or self.forces_with_energy
        if self.max_order is None:
            self._calculate_plain(atoms, want_forces, want_stress)
        else:
            self._calculate_truncated(atoms, want_forces, want_stress)

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

    def _calculate_truncated(self, atoms: ase.Atoms, forces: bool, stress: bool) -> None:
        self.results.update(self._truncated([atoms], forces, stress)[0])

    def compute_many(
        self, structures: list[ase.Atoms], forces: bool = True, stress: bool = False
    ) -> list[dict]:
        """Results for several structures (e.g. the beads of a path integral), with the
        subclusters of all of them evaluated together in packed model calls.

        Returns one ``results``-like dict per structure. Stress needs 3D-periodic cells.
        """
        if self.max_order is None:
            raise ValueError("compute_many needs a truncated calculator (max_order >= 1)")
        for atoms in structures:
            self._validate(atoms)
            if stress and not atoms.pbc.all():
                raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        return self._truncated(structures, forces or stress, stress)

    def _truncated(self, structures: list[ase.Atoms], forces: bool, stress: bool) -> list[dict]:
        timings = {"enumerate": 0.0, "pack": 0.0, "model": 0.0, "assemble": 0.0}
        prepared = []
        for slot, atoms in enumerate(structures):
            t0 = time.perf_counter()
            plan, layout = self._plan(atoms, slot)
            t1 = time.perf_counter()
            positions = atoms.positions[layout.parent] + layout.shift @ atoms.cell.array
            prepared.append((plan, layout, positions))
            timings["enumerate"] += t1 - t0
            timings["pack"] += time.perf_counter() - t1

        # every subcluster of every structure in one batch, evaluated in chunks
        t2 = time.perf_counter()
        sizes = np.concatenate([np.diff(layout.ptr) for _, layout, _ in prepared])
        batch = ClusterBatch(
            np.concatenate([p for _, _, p in prepared]),
            np.concatenate([atoms.numbers[layout.parent] for atoms, (_, layout, _) in zip(structures, prepared)]),
            np.concatenate([[0], np.cumsum(sizes)]),
        )
        timings["pack"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        energies = np.empty(batch.n_clusters)
        cluster_forces = np.zeros((batch.n_atoms, 3)) if forces else None
        for first, chunk in batch.chunks(self.max_atoms_per_chunk):
            e, f = self.backend.evaluate(chunk, forces)
            energies[first : first + chunk.n_clusters] = e
            if forces:
                cluster_forces[batch.ptr[first] : batch.ptr[first + chunk.n_clusters]] = f
        timings["model"] = time.perf_counter() - t3

        t4 = time.perf_counter()
        results = []
        cluster_offset = atom_offset = 0
        for atoms, (plan, layout, positions) in zip(structures, prepared):
            m, p = len(layout.ptr) - 1, int(layout.ptr[-1])
            results.append(
                self._assemble(
                    atoms,
                    plan,
                    layout,
                    positions,
                    energies[cluster_offset : cluster_offset + m],
                    None if cluster_forces is None else cluster_forces[atom_offset : atom_offset + p],
                    stress,
                )
            )
            cluster_offset += m
            atom_offset += p
        timings["assemble"] = time.perf_counter() - t4
        self.timings = timings
        return results

    def _assemble(self, atoms, plan, layout, positions, energies, cluster_forces, stress) -> dict:
        """E^(K), dE_k, per-atom shares, forces and stress of one structure from the
        energies and forces of its subclusters."""
        K = self.max_order
        n_atoms = len(atoms)
        sizes = np.diff(layout.ptr)
        # energies of the subsets of each order, in the plan's order
        per_order = []
        offset = 0
        for k in range(1, K + 1):
            m = len(plan.subsets[k - 1])
            if k < layout.first_order:
                body, _ = plan.images(k)
                per_order.append(self._one_body_energies(atoms.numbers[body[:, 0]]))
            else:
                per_order.append(energies[offset : offset + m])
                offset += m
        coefficients = plan.coefficients(K)
        eps = plan.eps(per_order)
        energy = float(sum(np.dot(c, e) for c, e in zip(coefficients, per_order)))
        body_order = np.array([e.sum() for e in eps])

        # per-atom energies: each eps(S) shared equally among the atoms of S
        per_atom = np.zeros((n_atoms, K))
        if layout.first_order == 2:
            per_atom[:, 0] = eps[0]  # atoms as bodies: eps({i}) = E({i})
        share = np.concatenate(
            [np.zeros(0)]
            + [eps[k - 1] / layout.atom_counts[k - 1] for k in range(layout.first_order, K + 1)]
        )
        order_of_atom = np.repeat(layout.order_of_cluster, sizes)
        np.add.at(per_atom, (layout.parent, order_of_atom - 1), np.repeat(share, sizes))

        results = dict(
            energy=energy,
            free_energy=energy,
            energies=per_atom.sum(axis=1),
            body_order_energies=body_order,
            truncated_energies=np.cumsum(body_order),
            subcluster_counts=plan.counts.copy(),
            per_atom_body_order_energies=per_atom,
        )
        if cluster_forces is not None:
            weight = np.concatenate(
                [np.zeros(0)] + [coefficients[k - 1] for k in range(layout.first_order, K + 1)]
            )
            weighted = cluster_forces * np.repeat(weight, sizes)[:, None]
            total = np.zeros((n_atoms, 3))
            np.add.at(total, layout.parent, weighted)
            results["forces"] = total
            if stress:
                # virial of each subcluster in its unwrapped positions (section 3)
                virial = -np.einsum("pa,pb->ab", weighted, positions)
                results["stress"] = full_3x3_to_voigt_6_stress(virial / atoms.get_volume())
        return results

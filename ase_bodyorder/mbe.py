"""Plan, evaluate, assemble: the many-body expansion as three public steps.

``BodyOrderCalculator`` is these three steps in a row. They are public so that energies
from anywhere (a quantum-chemistry code, a table, another MLIP) go through the same
assembly::

    subclusters = plan_subclusters(atoms, max_order=3, cutoff=4.0)
    energies = [my_code(cluster) for cluster in subclusters]     # ase.Atoms, isolated
    result = assemble(subclusters, energies)
    result["body_order_energies"], result["truncated_energies"], result["energy"]

Forces (and the stress of periodic cells) need the force on every atom of every
subcluster, in the same order as the subclusters' atoms: ``assemble(subclusters,
energies, forces=[f_0, f_1, ...])``. :func:`evaluate_subclusters` does the middle step
with any model the calculator accepts, packed where the model allows.

The maths is in docs/design.md: E^(K) is a fixed linear combination of the energies of
the connected subclusters (the coefficients come from the plan), so forces and the
virial are the same combination of the subclusters' forces and virials.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import ase
import numpy as np
from ase.stress import full_3x3_to_voigt_6_stress

from .errors import InputError
from .backends.base import Backend, ClusterBatch
from .backends.select import make_backend
from .expansion import ExpansionPlan, build_body_graph, plan_expansion

__all__ = [
    "Subclusters",
    "assemble",
    "evaluate_batch",
    "evaluate_subclusters",
    "plan_subclusters",
]

#: seconds a calculation runs before its progress bar shows
PROGRESS_DELAY_S = 3.0


@dataclass
class Subclusters:
    """The subclusters a model must evaluate for one structure, atom by atom.

    Subcluster ``m`` is made of atoms ``ptr[m]:ptr[m+1]``: each is a copy of atom
    ``parent[p]`` of the structure, at ``positions[p]`` (its periodic image, already
    unwrapped: subclusters are isolated, non-periodic clusters). ``order[m]`` is its
    number of bodies. With ``first_order == 2`` (atoms as bodies, the isolated-atom
    energies taken once per species) the one-body subclusters are not listed and
    :func:`assemble` needs ``one_body_energies``.
    """

    atoms: ase.Atoms
    plan: ExpansionPlan
    first_order: int
    parent: np.ndarray  # (P,) atom of the structure each subcluster atom copies
    shift: np.ndarray  # (P, 3) lattice shift of each subcluster atom
    ptr: np.ndarray  # (M + 1,)
    order: np.ndarray  # (M,) number of bodies of each subcluster
    atom_counts: list[np.ndarray]  # per order 1..K: number of atoms of each subset
    positions: np.ndarray  # (P, 3) angstrom

    @property
    def max_order(self) -> int:
        return self.plan.max_order

    @property
    def numbers(self) -> np.ndarray:
        """Atomic number of every subcluster atom."""
        return self.atoms.numbers[self.parent]

    @property
    def counts(self) -> np.ndarray:
        """Number of connected subsets of each size 1..K (listed or not)."""
        return self.plan.counts

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def cluster(self, m: int) -> ase.Atoms:
        """Subcluster ``m`` as an isolated, non-periodic ``ase.Atoms``."""
        a, b = self.ptr[m], self.ptr[m + 1]
        return ase.Atoms(numbers=self.numbers[a:b], positions=self.positions[a:b], pbc=False)

    def __iter__(self) -> Iterator[ase.Atoms]:
        return (self.cluster(m) for m in range(len(self)))

    def batch(self) -> ClusterBatch:
        """All subclusters as one :class:`~ase_bodyorder.backends.ClusterBatch`."""
        return ClusterBatch(self.positions, self.numbers, self.ptr)

    def one_body_species(self) -> list[int]:
        """Atomic numbers whose isolated-atom energy :func:`assemble` needs."""
        if self.first_order == 1:
            return []
        return sorted(set(self.atoms.numbers.tolist()))

    def at(self, atoms: ase.Atoms) -> "Subclusters":
        """The same subclusters at the positions and cell of ``atoms`` (same atoms,
        moved): reuses the enumeration, as an MD step with a skin does."""
        positions = atoms.positions[self.parent] + self.shift @ atoms.cell.array
        return replace(self, atoms=atoms, positions=positions)


def plan_subclusters(
    atoms: ase.Atoms,
    max_order: int,
    cutoff: float | None,
    *,
    fragments: list[list[int]] | None = None,
    max_subclusters: int | None = None,
    one_body_per_species: bool = False,
) -> Subclusters:
    """Step 1, plan: the connected subclusters of at most ``max_order`` bodies.

    :param atoms: the structure (finite, or periodic with its cell)
    :param max_order: body order K >= 1
    :param cutoff: locality radius (angstrom): bodies with no atoms closer than this do
        not interact, so subsets that are not connected at this distance have eps = 0
        and are left out. ``None`` lists every subset (finite systems only).
    :param fragments: atom-index lists to use as bodies (default: every atom)
    :param max_subclusters: raise :class:`~ase_bodyorder.expansion.ExpansionTooLargeError`
        before anything is evaluated if more subclusters than this are needed
    :param one_body_per_species: with atoms as bodies, leave the single atoms out of
        the list; :func:`assemble` then takes their energies per species
    """
    graph = build_body_graph(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, fragments)
    plan = plan_expansion(graph, int(max_order), max_subclusters)
    first = 2 if (one_body_per_species and fragments is None) else 1
    return _lay_out(atoms, plan, first)


def _lay_out(atoms: ase.Atoms, plan: ExpansionPlan, first: int) -> Subclusters:
    """Concatenate the atoms of every subset of sizes ``first``..K, member by member."""
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
        parent, shift = np.concatenate(parents), np.concatenate(shifts)
        size, order = np.concatenate(sizes), np.concatenate(orders)
    else:
        parent, shift = np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
        size, order = np.zeros(0, np.int64), np.zeros(0, np.int64)
    ptr = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
    positions = atoms.positions[parent] + shift @ atoms.cell.array
    return Subclusters(atoms, plan, first, parent, shift, ptr, order, atom_counts, positions)


# ----------------------------------------------------------------------------------


def evaluate_batch(
    backend: Backend, batch: ClusterBatch, forces: bool, max_atoms_per_chunk: int = 16384, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Energies (and forces) of every cluster of ``batch``, in chunks of at most
    ``max_atoms_per_chunk`` atoms (one model call each) to bound memory; a distributed
    backend runs the chunks on its workers. ``progress``: a bar on stderr, shown once
    the evaluation has taken more than a few seconds."""
    from tqdm.auto import tqdm

    energies = np.empty(batch.n_clusters)
    cluster_forces = np.zeros((batch.n_atoms, 3)) if forces else None
    chunks = list(batch.chunks(backend.chunk_atoms(batch.n_atoms, max_atoms_per_chunk)))
    results = backend.evaluate_chunks([chunk for _, chunk in chunks], forces)
    bar = tqdm(results, total=len(chunks), desc="subclusters", unit="chunk", delay=PROGRESS_DELAY_S,
               leave=False, disable=not progress or len(chunks) < 2, file=sys.stderr)
    for (first, chunk), (e, f) in zip(chunks, bar):
        energies[first : first + chunk.n_clusters] = e
        if forces:
            cluster_forces[batch.ptr[first] : batch.ptr[first + chunk.n_clusters]] = f
    return energies, cluster_forces


def evaluate_subclusters(
    subclusters: Subclusters,
    model,
    *,
    forces: bool = True,
    max_atoms_per_chunk: int | None = None,
    device: str | None = None,
) -> dict:
    """Step 2, evaluate: every subcluster with ``model`` (anything
    :class:`~ase_bodyorder.BodyOrderCalculator` accepts: a metatomic model, a shipped
    model's name, an ASE calculator, a backend).

    Returns the keyword arguments of :func:`assemble`: ``energies``, ``forces`` (if
    asked) and ``one_body_energies`` (when the plan takes them per species).
    """
    backend = make_backend(model, device)
    chunk = max_atoms_per_chunk or backend.preferred_chunk_atoms
    energies, cluster_forces = evaluate_batch(backend, subclusters.batch(), forces, chunk)
    out = {"energies": energies, "forces": cluster_forces}
    species = subclusters.one_body_species()
    if species:
        single = ClusterBatch.isolated_atoms(species)
        out["one_body_energies"] = dict(zip(species, backend.evaluate(single, False)[0].tolist()))
    return out


# ----------------------------------------------------------------------------------


def assemble(
    subclusters: Subclusters,
    energies: Sequence[float] | np.ndarray,
    forces: Sequence[np.ndarray] | np.ndarray | None = None,
    *,
    one_body_energies: dict[int, float] | None = None,
    stress: bool = False,
    max_order: int | None = None,
) -> dict:
    """Step 3, assemble: E^(K), every order's contribution, per-atom shares, forces and
    stress from the energies (and forces) of the subclusters.

    :param energies: one energy per subcluster (eV), in the order of ``subclusters``
    :param forces: the force on every subcluster atom (eV/A): one ``(n_m, 3)`` array per
        subcluster, or all of them stacked as ``(P, 3)``; needed for ``forces`` and
        ``stress`` in the result
    :param one_body_energies: isolated-atom energy per atomic number, when the plan was
        made with ``one_body_per_species``
    :param stress: also give the stress (cells periodic in 3D; needs forces)
    :param max_order: truncate at K' <= the plan's K (default: the plan's K)

    Returns a dict as ``BodyOrderCalculator.results``: ``energy`` (E^(K)),
    ``free_energy``, ``body_order_energies`` (dE_1..dE_K), ``truncated_energies``
    (E^(1)..E^(K)), ``subcluster_counts``, ``energies`` (per atom: each eps(S) shared
    equally among the atoms of S), ``per_atom_body_order_energies`` (atoms x K),
    ``eps`` (eps(S) of every connected subset, one array per order, in the plan's order)
    and, with forces, ``forces`` and (``stress=True``) ``stress`` (Voigt, eV/A^3).
    """
    plan, atoms = subclusters.plan, subclusters.atoms
    K = plan.max_order if max_order is None else int(max_order)
    if not 1 <= K <= plan.max_order:
        raise InputError(f"max_order must be between 1 and the plan's {plan.max_order}, got {max_order}")
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    if len(energies) != len(subclusters):
        raise InputError(f"got {len(energies)} energies for {len(subclusters)} subclusters")
    sizes = np.diff(subclusters.ptr)
    first = subclusters.first_order

    # energies of the subsets of each order 1..K, in the plan's order
    per_order = []
    offset = 0
    for k in range(1, K + 1):
        m = len(plan.subsets[k - 1])
        if k < first:
            if one_body_energies is None:
                raise InputError("this plan takes isolated-atom energies per species: give one_body_energies")
            missing = sorted(set(subclusters.one_body_species()) - set(one_body_energies))
            if missing:
                raise InputError(f"one_body_energies lacks atomic numbers {missing}")
            body, _ = plan.images(k)
            numbers = atoms.numbers[body[:, 0]].tolist()
            per_order.append(np.array([one_body_energies[z] for z in numbers], dtype=np.float64))
        else:
            per_order.append(energies[offset : offset + m])
            offset += m
    coefficients = plan.coefficients(K)
    eps = plan.eps(per_order)
    energy = float(sum(np.dot(c, e) for c, e in zip(coefficients, per_order)))
    body_order = np.array([e.sum() for e in eps])

    # per-atom energies: each eps(S) shared equally among the atoms of S
    n_atoms = len(atoms)
    listed = int(np.sum(sizes[subclusters.order <= K])) if len(sizes) else 0
    order_of_atom = np.repeat(subclusters.order, sizes)[:listed]
    parent = subclusters.parent[:listed]
    per_atom = np.zeros((n_atoms, K))
    if first == 2:
        per_atom[:, 0] = eps[0]  # atoms as bodies: eps({i}) = E({i})
    share = np.concatenate(
        [np.zeros(0)] + [eps[k - 1] / subclusters.atom_counts[k - 1] for k in range(first, K + 1)]
    )
    np.add.at(per_atom, (parent, order_of_atom - 1), np.repeat(share, sizes[: len(share)]))

    results = dict(
        energy=energy,
        free_energy=energy,
        energies=per_atom.sum(axis=1),
        body_order_energies=body_order,
        truncated_energies=np.cumsum(body_order),
        subcluster_counts=plan.counts[:K].copy(),
        per_atom_body_order_energies=per_atom,
        eps=eps,
    )
    if stress and forces is None:
        raise InputError("the stress needs the subclusters' forces")
    if forces is not None:
        cluster_forces = _stack_forces(forces, subclusters)[:listed]
        weight = np.concatenate([np.zeros(0)] + [coefficients[k - 1] for k in range(first, K + 1)])
        weighted = cluster_forces * np.repeat(weight, sizes[: len(weight)])[:, None]
        total = np.zeros((n_atoms, 3))
        np.add.at(total, parent, weighted)
        results["forces"] = total
        if stress:
            if not atoms.pbc.all():
                raise InputError("the stress needs a cell periodic in all three directions")
            # virial of each subcluster in its unwrapped positions (docs/design.md)
            virial = -np.einsum("pa,pb->ab", weighted, subclusters.positions[:listed])
            results["stress"] = full_3x3_to_voigt_6_stress(virial / atoms.get_volume())
    return results


def _stack_forces(forces, subclusters: Subclusters) -> np.ndarray:
    n = int(subclusters.ptr[-1])
    if isinstance(forces, np.ndarray) and forces.shape == (n, 3):
        return forces.astype(np.float64, copy=False)
    if len(forces) != len(subclusters):
        raise InputError(f"got forces for {len(forces)} subclusters, expected {len(subclusters)}")
    stacked = np.concatenate([np.asarray(f, dtype=np.float64).reshape(-1, 3) for f in forces]) if len(forces) else np.zeros((0, 3))
    if stacked.shape != (n, 3):
        raise InputError(f"forces hold {len(stacked)} atoms, the subclusters {n}")
    return stacked

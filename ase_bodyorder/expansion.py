"""The plan of a many-body expansion: bodies, their graph, connected subsets, coefficients.

Pure numpy; knows nothing of models (docs/design.md: The expansion, Locality,
Coefficients, Periodic systems and stress).

A *body* is an atom or a fragment (a group of atoms). In a periodic system the bodies
are the images of the home-cell bodies; an image is coded as one integer,
``body * n_shift_codes + shift_code``, so that sorting codes sorts images by
(body, shift). A *subset* is a sorted row of image codes. Periodic subsets are kept
once per lattice translation, in a canonical form: translated so that one image of
its lowest body sits at shift 0, choosing among such translations the
lexicographically smallest sorted row.

Only subsets that are connected in the "within cutoff" graph are enumerated: for a
local model every other subset has eps(S) = 0 (section 2), so leaving them out is exact.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .errors import ExpansionTooLargeError, InputError  # noqa: F401 (re-exported)

__all__ = [
    "BodyGraph",
    "ExpansionTooLargeError",
    "ExpansionPlan",
    "atom_pairs",
    "build_body_graph",
    "available_memory",
    "check_fragments",
    "expansion_memory",
    "molecules",
    "plan_expansion",
]


#: bytes held per subcluster atom once planned and packed: parent, lattice shift,
#: unwrapped position, force and species, and their copies in the packed batch
_BYTES_PER_SUBCLUSTER_ATOM = 160


def expansion_memory(counts: list[int], atoms_per_body: float = 1.0) -> int:
    """Bytes that planning and packing an expansion with ``counts[k-1]`` subsets of k
    bodies will hold (subset codes, their index of sub-subsets, the packed atoms); the
    model's own memory is bounded separately by the chunk size."""
    total = 0.0
    for k, m in enumerate(counts, start=1):
        children = 2**k - 2  # proper non-empty subsets, each an int64 index
        total += m * (8 * k + 8 * children + _BYTES_PER_SUBCLUSTER_ATOM * k * atoms_per_body)
    return int(total)


def available_memory() -> int | None:
    """Physical memory available now (bytes), or None where it cannot be told."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class BodyGraph:
    """Bodies and the edges of the "within cutoff" graph between their images.

    ``atoms_of_body[b]`` lists the atoms of body ``b``; ``atom_offsets[a]`` is the
    lattice shift that makes atom ``a`` whole within its fragment (zero for atoms as
    bodies). An edge ``(i, j, s)`` says that body ``j`` shifted by lattice vector ``s``
    interacts with body ``i`` at shift 0; edges come in both directions. ``cutoff`` is
    None when every subset is to be taken (complete graph, no periodic images).
    """

    atoms_of_body: list[np.ndarray]
    atom_offsets: np.ndarray  # (n_atoms, 3) int
    edge_i: np.ndarray
    edge_j: np.ndarray
    edge_shift: np.ndarray  # (n_edges, 3) int
    periodic: bool
    cutoff: float | None

    @property
    def n_bodies(self) -> int:
        return len(self.atoms_of_body)


def check_fragments(fragments: list[list[int]] | None, n_atoms: int) -> list[np.ndarray]:
    """Validate user fragments (disjoint, covering every atom) and return them.

    ``None`` means every atom is a body.
    """
    if fragments is None:
        return [np.array([a]) for a in range(n_atoms)]
    groups = []
    seen = np.full(n_atoms, -1)
    for f, fragment in enumerate(fragments):
        indices = np.asarray(list(fragment))
        if indices.size == 0:
            raise InputError(f"fragment {f} is empty")
        if not np.issubdtype(indices.dtype, np.integer):
            raise InputError(f"fragment {f} holds non-integer atom indices: {fragment}")
        bad = indices[(indices < 0) | (indices >= n_atoms)]
        if bad.size:
            raise InputError(
                f"fragment {f} names atoms {bad.tolist()} outside 0..{n_atoms - 1}"
            )
        for a in indices:
            if seen[a] >= 0:
                raise InputError(f"atom {a} is in fragment {seen[a]} and in fragment {f}")
            seen[a] = f
        groups.append(np.sort(indices))
    missing = np.flatnonzero(seen < 0)
    if missing.size:
        raise InputError(
            f"fragments leave out atoms {missing.tolist()}: every atom must be in one"
        )
    return groups


def molecules(atoms, scale: float = 1.2) -> list[list[int]]:
    """Covalently bonded groups of atoms (ASE's natural cutoffs times ``scale``), to
    use as fragments: atom indices of each connected component."""
    from ase.neighborlist import NeighborList, natural_cutoffs
    from scipy.sparse.csgraph import connected_components

    neighbours = NeighborList(natural_cutoffs(atoms, mult=scale), self_interaction=False, bothways=True)
    neighbours.update(atoms)
    count, labels = connected_components(neighbours.get_connectivity_matrix(sparse=True))
    return [np.flatnonzero(labels == c).tolist() for c in range(count)]


def build_body_graph(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    cutoff: float | None,
    fragments: list[list[int]] | None = None,
) -> BodyGraph:
    """Build the graph joining bodies with any pair of atoms closer than ``cutoff``."""
    positions = np.asarray(positions, dtype=np.float64)
    n_atoms = len(positions)
    bodies = check_fragments(fragments, n_atoms)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    periodic = bool(pbc.any())
    body_of_atom = np.empty(n_atoms, dtype=np.int64)
    for b, atoms in enumerate(bodies):
        body_of_atom[atoms] = b
    offsets = np.zeros((n_atoms, 3), dtype=np.int64)

    if cutoff is None:
        if periodic:
            raise InputError(
                "cutoff=None (every subset) is only defined for finite systems: "
                "a periodic system has infinitely many bodies"
            )
        n = len(bodies)
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        return BodyGraph(bodies, offsets, i, j, np.zeros((len(i), 3), np.int64), False, None)

    box = np.asarray(cell, dtype=np.float64) if periodic else np.zeros((3, 3))
    ai, aj, shifts = atom_pairs(positions, box, pbc, float(cutoff))

    if fragments is not None and periodic:
        offsets = _unwrap_fragments(positions, box, pbc, bodies)

    # atom j at shift S belongs to the image of its body at S + offset_j - ...: body
    # image T places atom a at r_a + (offset_a + T) cell, so T = S + offset_i - offset_j
    # relative to body i at shift 0.
    bi = body_of_atom[ai]
    bj = body_of_atom[aj]
    body_shift = shifts + offsets[ai] - offsets[aj]
    keep = ~((bi == bj) & ~body_shift.any(axis=1))  # drop pairs inside one body
    edges = np.unique(
        np.column_stack([bi[keep], bj[keep], body_shift[keep]]), axis=0
    ).reshape(-1, 5)
    return BodyGraph(
        bodies, offsets, edges[:, 0], edges[:, 1], edges[:, 2:5], periodic, float(cutoff)
    )


def atom_pairs(
    positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair (i, j, shift) of atoms closer than ``cutoff`` (a full list).

    vesin is fast, but importing it imports torch when torch is installed. So it is used
    only once torch is loaded anyway (metatomic models); otherwise (an ASE calculator
    as the model, which evaluates one subcluster at a time and so never waits on this)
    ASE's own neighbour list gives the same pairs without loading torch.
    """
    periodic = bool(np.any(pbc))
    if "torch" in sys.modules:
        import vesin

        ai, aj, shifts = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(
            points=positions, box=box, periodic=pbc if periodic else False, quantities="ijS"
        )
    else:
        import ase
        from ase.neighborlist import neighbor_list

        atoms = ase.Atoms(positions=positions, cell=box if periodic else None, pbc=pbc)
        ai, aj, shifts = neighbor_list("ijS", atoms, cutoff)
    return ai.astype(np.int64), aj.astype(np.int64), shifts.astype(np.int64)


def _unwrap_fragments(
    positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, bodies: list[np.ndarray]
) -> np.ndarray:
    """Lattice shifts making each fragment whole: each atom at its minimum image
    from the fragment's first atom (fragments smaller than half the cell)."""
    offsets = np.zeros((len(positions), 3), dtype=np.int64)
    inverse = np.linalg.inv(box)
    for atoms in bodies:
        delta = positions[atoms] - positions[atoms[0]]
        fractional = delta @ inverse
        shift = -np.round(fractional).astype(np.int64)
        shift[:, ~pbc] = 0
        offsets[atoms] = shift
    return offsets


# ----------------------------------------------------------------------------------
# image codes


@dataclass(frozen=True)
class _Codec:
    """Packs (body, shift) into one integer and back."""

    radius: int  # shifts are in [-radius, radius] along each axis

    @property
    def width(self) -> int:
        return 2 * self.radius + 1

    @property
    def n_shift_codes(self) -> int:
        return self.width**3

    def encode(self, body: np.ndarray, shift: np.ndarray) -> np.ndarray:
        w, r = self.width, self.radius
        if np.any(np.abs(shift) > r):
            raise AssertionError("image shift out of the codec's range")  # a bug if hit
        s = (shift[..., 0] + r) * w * w + (shift[..., 1] + r) * w + (shift[..., 2] + r)
        return body * self.n_shift_codes + s

    def decode(self, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, r = self.width, self.radius
        body, s = np.divmod(code, self.n_shift_codes)
        shift = np.stack([s // (w * w) - r, (s // w) % w - r, s % w - r], axis=-1)
        return body, shift

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        """Canonical translation of each subset row (rows of image codes)."""
        rows = np.sort(rows, axis=1)
        if self.radius == 0 or rows.shape[0] == 0:
            return rows
        body, shift = self.decode(rows)
        lowest = body.min(axis=1, keepdims=True)
        best = None
        for anchor in range(rows.shape[1]):
            candidate = np.sort(
                self.encode(body, shift - shift[:, anchor : anchor + 1, :]), axis=1
            )
            usable = body[:, anchor] == lowest[:, 0]
            if best is None:
                best = np.where(usable[:, None], candidate, np.iinfo(np.int64).max)
                continue
            replace = usable & _lexicographic_less(candidate, best)
            best[replace] = candidate[replace]
        return best


def _lexicographic_less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise a < b in lexicographic order."""
    differ = a != b
    first = np.argmax(differ, axis=1)
    rows = np.arange(len(a))
    return differ.any(axis=1) & (a[rows, first] < b[rows, first])


class _RowIndex:
    """Looks rows up in a sorted table of unique rows (exact, vectorised)."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self._keys = _row_keys(rows)

    def find(self, queries: np.ndarray) -> np.ndarray:
        """Index of each query row in the table, or -1."""
        if len(self.rows) == 0 or len(queries) == 0:
            return np.full(len(queries), -1, dtype=np.int64)
        keys = _row_keys(queries)
        position = np.searchsorted(self._keys, keys)
        position = np.minimum(position, len(self._keys) - 1)
        found = self._keys[position] == keys
        return np.where(found, position, -1)


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """One sortable, comparable key per row (a byte string of big-endian integers).

    Big-endian bytes sort like the integers they hold (codes are non-negative), so the
    keys sort in the same order as the rows do lexicographically.
    """
    rows = np.ascontiguousarray(rows.astype(">i8"))
    return rows.view(f"V{8 * rows.shape[1]}").ravel()


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    if len(rows) == 0:
        return rows
    keys = _row_keys(rows)
    _, first = np.unique(keys, return_index=True)  # np.unique sorts: rows come sorted
    return rows[first]


# ----------------------------------------------------------------------------------
# the plan


@dataclass
class ExpansionPlan:
    """Connected subsets of sizes 1..K and how they contain each other.

    ``subsets[k-1]`` is an ``(M_k, k)`` array of image codes. ``children[(m, k)]`` is an
    ``(M_m, C(m, k))`` array: for every subset of size m, the index in ``subsets[k-1]`` of
    each of its k-subsets (translated to canonical form), or -1 where that k-subset is
    not connected (its eps is zero).
    """

    graph: BodyGraph
    max_order: int
    codec: _Codec
    subsets: list[np.ndarray]
    children: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    _coefficients: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def counts(self) -> np.ndarray:
        """Number of connected subsets of each size 1..K."""
        return np.array([len(s) for s in self.subsets], dtype=np.int64)

    def coefficients(self, order: int | None = None) -> list[np.ndarray]:
        """Weights c_S with E^(order) = sum_S c_S E(S) over connected |S| <= order.

        Solves sum over connected U containing S, |U| <= order, of c_U = 1 for every
        connected S, from the largest subsets down (docs/design.md, Coefficients).
        """
        order = self.max_order if order is None else order
        if order in self._coefficients:  # a plan reused across MD steps (skin)
            return self._coefficients[order]
        coefficients = [np.ones(len(s)) for s in self.subsets[:order]]
        for m in range(order, 1, -1):
            for k in range(1, m):
                index = self.children[(m, k)]
                valid = index >= 0
                weights = np.broadcast_to(coefficients[m - 1][:, None], index.shape)
                # subtract, for every k-subset, the weights of its connected supersets
                np.subtract.at(coefficients[k - 1], index[valid], weights[valid])
        self._coefficients[order] = coefficients
        return coefficients

    def eps(self, energies: list[np.ndarray]) -> list[np.ndarray]:
        """Inclusion-exclusion eps(S) from the energies E(S) of every connected subset.

        eps(S) = E(S) - sum over connected proper subsets T of eps(T): a disconnected T
        has eps(T) = 0, so leaving it out is exact.
        """
        eps: list[np.ndarray] = []
        for m in range(1, len(energies) + 1):
            value = np.array(energies[m - 1], dtype=np.float64, copy=True)
            for k in range(1, m):
                index = self.children[(m, k)]
                value -= np.where(index >= 0, eps[k - 1][np.maximum(index, 0)], 0.0).sum(
                    axis=1
                )
            eps.append(value)
        return eps

    def images(self, order: int) -> tuple[np.ndarray, np.ndarray]:
        """Bodies and lattice shifts of the members of every subset of one size."""
        return self.codec.decode(self.subsets[order - 1])


def plan_expansion(
    graph: BodyGraph, max_order: int, max_subclusters: int | None = None
) -> ExpansionPlan:
    """Enumerate the connected subsets of sizes 1..max_order and index their subsets.

    Subsets of size k+1 are grown from those of size k by adding a neighbour of any
    member (every connected set has a member whose removal leaves it connected, so
    nothing is missed), then put in canonical form and deduplicated.
    Raises :class:`ExpansionTooLargeError` before any model is evaluated when the total
    count passes ``max_subclusters``.
    """
    if graph.periodic:
        reach = int(np.abs(graph.edge_shift).max()) if len(graph.edge_shift) else 0
        codec = _Codec(radius=max(1, reach * max(1, max_order - 1)))
    else:
        codec = _Codec(radius=0)

    n = graph.n_bodies
    neighbour_codes, degree = _padded_neighbours(graph, codec)
    zero = codec.encode(np.arange(n), np.zeros((n, 3), dtype=np.int64))
    subsets = [zero.reshape(-1, 1)]
    total = n
    for size in range(2, max_order + 1):
        grown = _grow(subsets[-1], neighbour_codes, degree, codec)
        total += len(grown)
        if max_subclusters is not None and total > max_subclusters:
            counts = [len(s) for s in subsets] + [len(grown)]
            needed = expansion_memory(counts, sum(len(a) for a in graph.atoms_of_body) / max(1, n))
            raise ExpansionTooLargeError(
                f"the expansion to body order {max_order} needs more than "
                f"{max_subclusters} subclusters (sizes 1..{size}: {counts}, "
                f"{total} so far, about {needed / 2**30:.2f} GiB to plan and pack); raise "
                "max_subclusters, lower max_order, use a smaller cutoff, or group atoms into fragments"
            )
        counts = [len(s) for s in subsets] + [len(grown)]
        atoms_per_body = sum(len(a) for a in graph.atoms_of_body) / max(1, n)
        # what the remaining orders will add is not known yet: this checks what is known
        needed, available = expansion_memory(counts, atoms_per_body), available_memory()
        if available is not None and needed > 0.8 * available:
            raise ExpansionTooLargeError(
                f"the expansion to body order {max_order} needs {total} subclusters so far "
                f"(sizes 1..{size}: {counts}) and about {needed / 2**30:.1f} GiB to plan and "
                f"pack them, more than the {available / 2**30:.1f} GiB of memory available; "
                "lower max_order, use a smaller cutoff, group atoms into fragments, or spread "
                "the work over more machines"
            )
        subsets.append(grown)
        if len(grown) == 0:
            # no connected subsets of this size: none larger either
            subsets += [np.zeros((0, k), np.int64) for k in range(size + 1, max_order + 1)]
            break

    plan = ExpansionPlan(graph=graph, max_order=max_order, codec=codec, subsets=subsets)
    tables = [_RowIndex(s) for s in subsets]
    for m in range(2, max_order + 1):
        rows = subsets[m - 1]
        for k in range(1, m):
            combos = list(itertools.combinations(range(m), k))
            index = np.empty((len(rows), len(combos)), dtype=np.int64)
            for c, combo in enumerate(combos):
                index[:, c] = tables[k - 1].find(codec.canonical(rows[:, combo]))
            plan.children[(m, k)] = index
    return plan


def _padded_neighbours(graph: BodyGraph, codec: _Codec) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour images of every body at shift 0, padded to the largest degree."""
    n = graph.n_bodies
    degree = np.bincount(graph.edge_i, minlength=n)
    width = int(degree.max()) if n and len(graph.edge_i) else 0
    order = np.argsort(graph.edge_i, kind="stable")
    ei, ej, es = graph.edge_i[order], graph.edge_j[order], graph.edge_shift[order]
    start = np.concatenate([[0], np.cumsum(degree)[:-1]]) if n else np.zeros(0, int)
    slot = np.arange(len(ei)) - start[ei]
    bodies = np.full((n, width), -1, dtype=np.int64)
    shifts = np.zeros((n, width, 3), dtype=np.int64)
    bodies[ei, slot] = ej
    shifts[ei, slot] = es
    return np.stack([bodies, *np.moveaxis(shifts, -1, 0)], axis=-1), degree


def _grow(
    rows: np.ndarray, neighbours: np.ndarray, degree: np.ndarray, codec: _Codec
) -> np.ndarray:
    """All connected subsets with one more member, canonical, unique, sorted."""
    k = rows.shape[1]
    width = neighbours.shape[1]
    if len(rows) == 0 or width == 0:
        return np.zeros((0, k + 1), dtype=np.int64)
    # process rows in chunks so that memory stays bounded on large systems
    chunk = max(1, 4_000_000 // (k * width))
    pieces = []
    for begin in range(0, len(rows), chunk):
        block = rows[begin : begin + chunk]
        body, shift = codec.decode(block)  # (M, k), (M, k, 3)
        nb = neighbours[body]  # (M, k, width, 4)
        valid = nb[..., 0] >= 0
        cand = codec.encode(
            np.where(valid, nb[..., 0], 0), shift[:, :, None, :] + nb[..., 1:4]
        )
        cand = cand.reshape(len(block), -1)
        valid = valid.reshape(len(block), -1)
        valid &= ~(cand[:, :, None] == block[:, None, :]).any(axis=2)
        owner, slot = np.nonzero(valid)
        grown = np.column_stack([block[owner], cand[owner, slot]])
        pieces.append(_unique_rows(codec.canonical(grown)))
    return _unique_rows(np.concatenate(pieces))

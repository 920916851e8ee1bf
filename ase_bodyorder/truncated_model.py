"""The TorchScript module inside an exported truncated model (see ``export.py``).

``TruncatedModel`` wraps the ``module`` of a metatomic ``AtomisticModel`` and returns
E^(K), the model's many-body expansion truncated at K bodies (docs/design.md, "The
expansion"), computed entirely in TorchScript from what the engine gives: the system,
one full neighbour list at the wrapped model's cutoff rc, and ``selected_atoms``.

Nodes are images of atoms, coded as one int64: ``code = atom * B^3 + shift part``,
with the cell shift's three components stored with an offset ``o`` in base ``B = 2o+1``.
Translating an image by a lattice vector adds a constant to its code, so a set of
images (a row of sorted codes) is translated by subtracting one number from the row.
A set's canonical translate puts the member with the smallest code (lowest atom index,
then smallest shift) at shift 0: every lattice translate of a set has the same
canonical row, so ``unique`` keeps each set once (docs/design.md, "Periodic systems").

Selection (LAMMPS gives explicit ghosts with zero shifts and selects the local atoms):
the sets kept are those that can still reach a selected atom, i.e. whose size plus the
hop distance of their closest member to a selected atom is at most K. These are all
the connected sets that hold a selected atom and all their connected subsets, which
eps needs. Each eps(S) is shared equally among the atoms of S, and only the selected
atoms' shares are returned (and summed for the total): a set spanning a local atom
and ghosts is then counted once in total over the domains, whichever holds its atoms.
"""


from typing import Dict, List, Optional, Tuple

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System

#: name of the extra output with the contribution dE_k of order k
DE_OUTPUT = "ase-bodyorder::dE_{}"


def _row_keys(rows: List[torch.Tensor]) -> Optional[List[torch.Tensor]]:
    """One int64 per row (rows of equal width), equal for equal rows: the codes are
    replaced by their rank among all codes, and a row read as a number in that base.
    None when the numbers would not fit in 63 bits."""
    ranks = torch.unique(torch.cat([r.reshape(-1) for r in rows]), sorted=True)
    base = ranks.shape[0] + 1
    width = rows[0].shape[1]
    if float(base) ** width >= 2.0**62:
        return None
    keys: List[torch.Tensor] = []
    for r in rows:
        digits = torch.searchsorted(ranks, r)
        key = torch.zeros(r.shape[0], dtype=torch.int64, device=r.device)
        for c in range(width):
            key = key * base + digits[:, c]
        keys.append(key)
    return keys


def _unique_rows(rows: torch.Tensor) -> torch.Tensor:
    """The distinct rows (a 1-D unique of row keys: much faster than unique(dim=0))."""
    if rows.shape[0] == 0:
        return rows
    keys = _row_keys([rows])
    if keys is None:
        return torch.unique(rows, sorted=True, dim=0)
    key = keys[0]
    order = torch.argsort(key)
    sorted_key = key[order]
    first = torch.ones_like(sorted_key, dtype=torch.bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return rows[order[first]]


def _lookup(table: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Row index of each query row in ``table`` (distinct rows of equal width), -1 if
    absent."""
    n = table.shape[0]
    missing = torch.full((queries.shape[0],), -1, dtype=torch.int64, device=queries.device)
    if n == 0 or queries.shape[0] == 0:
        return missing
    keys = _row_keys([table, queries])
    if keys is None:
        _, inverse = torch.unique(torch.cat([table, queries]), sorted=True, return_inverse=True, dim=0)
        position = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.int64, device=queries.device)
        position[inverse[:n]] = torch.arange(n, device=queries.device)
        return position[inverse[n:]]
    table_key, query_key = keys[0], keys[1]
    order = torch.argsort(table_key)
    sorted_key = table_key[order]
    where = torch.searchsorted(sorted_key, query_key).clamp(max=n - 1)
    return torch.where(sorted_key[where] == query_key, order[where], missing)


def _canonical(rows: torch.Tensor, b3: int, center: int) -> torch.Tensor:
    """Sorted rows translated so that their smallest code sits at shift 0."""
    rows = torch.sort(rows, dim=1).values
    return rows - (rows[:, :1] % b3 - center)


def _hop_distance(n_atoms: int, first: torch.Tensor, second: torch.Tensor, selected: torch.Tensor, hops: int) -> torch.Tensor:
    """Graph distance (in edges, capped at hops + 1) of every atom to a selected atom."""
    distance = torch.full((n_atoms,), hops + 1, dtype=torch.int64, device=first.device)
    distance[selected] = 0
    for _ in range(hops):
        distance = distance.scatter_reduce(0, second, distance[first] + 1, reduce="amin", include_self=True)
    return distance


def _grow(
    sets: torch.Tensor,
    start: torch.Tensor,
    degree: torch.Tensor,
    second: torch.Tensor,
    edge_shift: torch.Tensor,
    distance: torch.Tensor,
    max_order: int,
    b3: int,
    center: int,
) -> torch.Tensor:
    """Every connected set of one more member, canonical and once each."""
    n, k = sets.shape[0], sets.shape[1]
    flat = sets.reshape(-1)
    count = degree[flat // b3]
    member = flat.repeat_interleave(count)
    row = torch.arange(n, device=sets.device).repeat_interleave(k).repeat_interleave(count)
    # edge e of each member: start of its atom's edges plus the position in the run
    run_start = (torch.cumsum(count, 0) - count).repeat_interleave(count)
    edge = start[flat // b3].repeat_interleave(count) + torch.arange(member.shape[0], device=sets.device) - run_start
    new = second[edge] * b3 + member % b3 + edge_shift[edge]
    old = sets[row]
    candidates = torch.cat([old, new[:, None]], dim=1)
    reach = distance[candidates // b3].min(dim=1).values + k + 1 <= max_order
    keep = torch.logical_and(torch.logical_not((old == new[:, None]).any(dim=1)), reach)
    candidates = _canonical(candidates[keep], b3, center)
    return _unique_rows(candidates)


def _column_subsets(m: int, k: int) -> List[List[int]]:
    """The k-element column subsets of m columns, in increasing order."""
    result: List[List[int]] = []
    for mask in range(1, (1 << m) - 1):
        columns: List[int] = []
        for c in range(m):
            if (mask >> c) & 1 == 1:
                columns.append(c)
        if len(columns) == k:
            result.append(columns)
    return result


def _eps(sets: List[torch.Tensor], energies: List[torch.Tensor], b3: int, center: int) -> List[torch.Tensor]:
    """eps(S) of every set: E(S) minus the eps of its connected proper subsets (a
    subset absent from the tables is disconnected: its eps is zero)."""
    eps: List[torch.Tensor] = [energies[0]]
    for m in range(2, len(sets) + 1):
        value = energies[m - 1]
        rows = sets[m - 1]
        for k in range(1, m):
            columns = _column_subsets(m, k)
            queries = torch.cat([rows[:, c] for c in columns])
            queries = queries - (queries[:, :1] % b3 - center)
            index = _lookup(sets[k - 1], queries)
            found = eps[k - 1][index.clamp(min=0)] * (index >= 0).to(value.dtype)
            value = value - found.reshape(len(columns), -1).sum(dim=0)
        eps.append(value)
    return eps


class TruncatedModel(torch.nn.Module):
    """E^(K) of a wrapped metatomic model, with per-atom shares and every dE_k."""

    _requests: List[NeighborListOptions]

    def __init__(
        self,
        module: torch.nn.Module,
        max_order: int,
        cutoff: float,
        energy_key: str,
        energy_unit: str,
        requests: List[NeighborListOptions],
        max_atoms_per_chunk: int,
    ):
        super().__init__()
        self._model = module
        self._max_order = int(max_order)
        self._cutoff = float(cutoff)
        self._energy_key = energy_key
        self._energy_unit = energy_unit
        self._requests = requests
        self._chunk = int(max_atoms_per_chunk)
        self._graph = NeighborListOptions(cutoff=float(cutoff), full_list=True, strict=True, requestor="ase-bodyorder")
        for options in requests:
            # the wrapped model's own full list at the cutoff, when it has one: metatomic
            # collects the wrapped model's requests too, so the engine builds one list
            # (edges beyond the cutoff of a non-strict list are dropped in _enumerate)
            if options.full_list and options.cutoff == float(cutoff):
                self._graph = options
        self._de_names: List[str] = [DE_OUTPUT.format(k) for k in range(1, self._max_order + 1)]

    @torch.jit.export
    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self._graph]

    def _enumerate(self, system: System, selected: torch.Tensor) -> Tuple[List[torch.Tensor], int, int]:
        """Canonical connected sets of 1..K images, and the code's offset and base."""
        neighbors = system.get_neighbor_list(self._graph)
        samples = neighbors.samples.values.to(torch.int64)
        with torch.no_grad():
            samples = samples[torch.linalg.norm(neighbors.values.reshape(-1, 3), dim=1) < self._cutoff]
        first, second, shifts = samples[:, 0], samples[:, 1], samples[:, 2:5]
        largest = int(shifts.abs().max()) if shifts.shape[0] > 0 else 0
        offset = self._max_order * largest
        base = 2 * offset + 1
        b3, center = base * base * base, (offset * base + offset) * base + offset
        n_atoms = system.positions.shape[0]
        degree = torch.bincount(first, minlength=n_atoms)
        order = torch.argsort(first)
        second, shifts = second[order], shifts[order]
        edge_shift = (shifts[:, 0] * base + shifts[:, 1]) * base + shifts[:, 2]
        start = torch.cumsum(degree, 0) - degree
        distance = _hop_distance(n_atoms, first, samples[:, 1], selected, self._max_order - 1)
        roots = torch.nonzero(distance <= self._max_order - 1).reshape(-1, 1)
        sets = [roots * b3 + center]
        for _ in range(1, self._max_order):
            sets.append(_grow(sets[-1], start, degree, second, edge_shift, distance, self._max_order, b3, center))
        return sets, offset, base

    def _cluster_pairs(self, sizes: List[int], counts: List[int], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pairs (i < j) of atoms of the same set, in the layout of all sets in a row."""
        first: List[torch.Tensor] = []
        second: List[torch.Tensor] = []
        base = 0
        for size, count in zip(sizes, counts):
            if size > 1 and count > 0:
                pattern = torch.triu_indices(size, size, 1, device=device)
                starts = base + size * torch.arange(count, device=device)[:, None]
                first.append((starts + pattern[0]).reshape(-1))
                second.append((starts + pattern[1]).reshape(-1))
            base += size * count
        if len(first) == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return empty, empty
        return torch.cat(first), torch.cat(second)

    def _packed_system(self, types: torch.Tensor, positions: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> System:
        """One non-periodic system whose neighbour lists stay inside each set."""
        system = System(
            types=types,
            positions=positions,
            cell=torch.zeros((3, 3), dtype=positions.dtype, device=positions.device),
            pbc=torch.zeros(3, dtype=torch.bool, device=positions.device),
        )
        xyz = Labels("xyz", torch.tensor([[0], [1], [2]], device=positions.device))
        distance_labels = Labels("distance", torch.tensor([[0]], device=positions.device))
        with torch.no_grad():
            length = torch.linalg.norm(positions[second] - positions[first], dim=1)
        for options in self._requests:
            keep = length < options.cutoff
            i, j = first[keep], second[keep]
            if options.full_list:
                i, j = torch.cat([i, j]), torch.cat([j, i])
            zeros = torch.zeros_like(i)
            names = ["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"]
            samples = Labels(names, torch.stack([i, j, zeros, zeros, zeros], dim=1).to(torch.int32))
            vectors = (positions[j] - positions[i]).reshape(-1, 3, 1)
            system.add_neighbor_list(options, TensorBlock(vectors, samples, [xyz], distance_labels))
        return system

    def _set_energies(self, system: System, sets: List[torch.Tensor], offset: int, base: int) -> List[torch.Tensor]:
        """E(S) of every set (float64), the sets packed into few model calls."""
        b3 = base * base * base
        atoms: List[torch.Tensor] = []
        shifts: List[torch.Tensor] = []
        sizes: List[int] = []
        counts: List[int] = []
        for rows in sets:
            codes = rows.reshape(-1)
            rest = codes % b3
            atoms.append(codes // b3)
            shifts.append(torch.stack([rest // (base * base), (rest // base) % base, rest % base], dim=1) - offset)
            sizes.append(rows.shape[1])
            counts.append(rows.shape[0])
        atom = torch.cat(atoms)
        # positions taken from the engine's: its autograd gives forces and stress
        positions = system.positions[atom] + torch.cat(shifts).to(system.positions.dtype) @ system.cell
        types = system.types[atom]
        first, second = self._cluster_pairs(sizes, counts, atom.device)
        size_of_cluster = torch.tensor(sizes, device=atom.device).repeat_interleave(torch.tensor(counts, device=atom.device))
        cluster = torch.arange(size_of_cluster.shape[0], device=atom.device).repeat_interleave(size_of_cluster)
        cluster_end = torch.cumsum(size_of_cluster, 0)
        cluster_start = cluster_end - size_of_cluster
        energies = torch.zeros(size_of_cluster.shape[0], dtype=torch.float64, device=atom.device)
        # chunks of whole sets: a set belongs to the chunk where its first atom falls,
        # so a call holds at most max_atoms_per_chunk + K - 1 atoms
        chunk_of_cluster = torch.div(cluster_start, self._chunk, rounding_mode="floor")
        chunks: List[int] = torch.unique(chunk_of_cluster).tolist()
        for chunk in chunks:
            members = torch.nonzero(chunk_of_cluster == chunk).reshape(-1)
            a, b = int(cluster_start[members[0]]), int(cluster_end[members[-1]])
            in_chunk = torch.logical_and(first >= a, first < b)
            chunk_system = self._packed_system(types[a:b], positions[a:b], first[in_chunk] - a, second[in_chunk] - a)
            request = {self._energy_key: ModelOutput(unit=self._energy_unit, sample_kind="atom")}
            block = self._model([chunk_system], request, None)[self._energy_key].block()
            local = block.samples.column("atom").to(torch.int64)
            # float64 sums: the differences that make eps cancel large numbers
            energies.index_add_(0, cluster[a:b][local], block.values.reshape(-1).to(torch.float64))
        result: List[torch.Tensor] = []
        begin = 0
        for count in counts:
            result.append(energies[begin : begin + count])
            begin += count
        return result

    def _per_atom(self, system: System, selected: torch.Tensor) -> torch.Tensor:
        """(K, n_atoms) float64: each atom's share of the eps of each order."""
        sets, offset, base = self._enumerate(system, selected)
        b3 = base * base * base
        center = (offset * base + offset) * base + offset
        eps = _eps(sets, self._set_energies(system, sets, offset, base), b3, center)
        n_atoms = system.positions.shape[0]
        shares = torch.zeros((self._max_order, n_atoms), dtype=torch.float64, device=system.positions.device)
        for k in range(len(sets)):
            atoms = (sets[k] // b3).reshape(-1)
            shares[k].index_add_(0, atoms, (eps[k] / (k + 1)).repeat_interleave(k + 1))
        return shares

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels],
    ) -> Dict[str, TensorMap]:
        for name in outputs.keys():
            if name != "energy" and name not in self._de_names:
                raise ValueError("this truncated model has no output named '" + name + "'")
        if len(systems) == 0:
            return {}
        per_system: List[torch.Tensor] = []
        atom_samples: List[torch.Tensor] = []
        for s, system in enumerate(systems):
            n_atoms = system.positions.shape[0]
            selected = torch.ones(n_atoms, dtype=torch.bool, device=system.positions.device)
            if selected_atoms is not None:
                rows = selected_atoms.values
                chosen = rows[rows[:, 0] == s][:, 1].to(torch.int64)
                selected = torch.zeros(n_atoms, dtype=torch.bool, device=system.positions.device)
                selected[chosen] = True
            index = torch.nonzero(selected).reshape(-1)
            per_system.append(self._per_atom(system, selected)[:, index].to(system.positions.dtype))
            atom_samples.append(torch.stack([torch.full_like(index, s), index], dim=1))
        return self._outputs(outputs, per_system, atom_samples)

    def _outputs(self, outputs: Dict[str, ModelOutput], per_system: List[torch.Tensor], atom_samples: List[torch.Tensor]) -> Dict[str, TensorMap]:
        """TensorMaps of the requested outputs, per atom or per system."""
        device = per_system[0].device
        properties = Labels("energy", torch.tensor([[0]], device=device))
        results: Dict[str, TensorMap] = {}
        for name, request in outputs.items():
            values: List[torch.Tensor] = []
            for shares in per_system:
                if name == "energy":
                    values.append(shares.sum(dim=0))
                else:
                    values.append(shares[self._de_names.index(name)])
            if request.sample_kind == "atom":
                samples = Labels(["system", "atom"], torch.cat(atom_samples).to(torch.int32))
                block = TensorBlock(torch.cat(values).reshape(-1, 1), samples, [], properties)
            else:
                total = torch.stack([v.sum() for v in values]).reshape(-1, 1)
                samples = Labels(["system"], torch.arange(len(values), device=device, dtype=torch.int32).reshape(-1, 1))
                block = TensorBlock(total, samples, [], properties)
            results[name] = TensorMap(Labels("_", torch.tensor([[0]], device=device)), [block])
        return results

"""The plan alone: connected-subset enumeration and coefficients (no models)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ase_bodyorder.expansion import build_body_graph, plan_expansion


def _connected(subset, adjacency):
    subset = list(subset)
    seen, stack = {subset[0]}, [subset[0]]
    while stack:
        a = stack.pop()
        for b in subset:
            if b not in seen and adjacency[a, b]:
                seen.add(b)
                stack.append(b)
    return len(seen) == len(subset)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_subsets_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, 5, (11, 3))
    cutoff = 2.2
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    adjacency = (distance < cutoff) & ~np.eye(len(positions), dtype=bool)
    plan = plan_expansion(build_body_graph(positions, np.zeros((3, 3)), [False] * 3, cutoff), 5)
    for k in range(1, 6):
        expected = [s for s in itertools.combinations(range(11), k) if _connected(s, adjacency)]
        assert sorted(map(tuple, plan.subsets[k - 1].tolist())) == expected


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_complete_graph_coefficients_are_the_closed_form(order):
    n = 8
    plan = plan_expansion(build_body_graph(np.zeros((n, 3)), np.zeros((3, 3)), [False] * 3, None), order)
    for k, c in enumerate(plan.coefficients(), start=1):
        expected = 1 if k == order else (-1) ** (order - k) * math.comb(n - k - 1, order - k)
        assert np.all(c == expected)


def test_coefficients_sum_to_one_over_supersets():
    """sum over connected U containing S, |U| <= K, of c_U = 1, checked by brute force."""
    rng = np.random.default_rng(5)
    positions = rng.uniform(0, 4, (9, 3))
    plan = plan_expansion(build_body_graph(positions, np.zeros((3, 3)), [False] * 3, 2.0), 4)
    coefficient = {
        tuple(row): c
        for rows, cs in zip(plan.subsets, plan.coefficients())
        for row, c in zip(rows.tolist(), cs)
    }
    for subset in coefficient:
        total = sum(c for u, c in coefficient.items() if set(subset) <= set(u))
        assert abs(total - 1) < 1e-12


def test_periodic_counts_scale_with_the_supercell():
    rng = np.random.default_rng(0)
    cell = np.diag([2.7, 2.9, 3.1])
    positions = rng.uniform(0, 2.5, (2, 3))
    primitive = plan_expansion(build_body_graph(positions, cell, [True] * 3, 3.0), 3)
    shifts = np.array(list(itertools.product(range(2), repeat=3)))
    big = (positions[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    supercell = plan_expansion(build_body_graph(big, 2 * cell, [True] * 3, 3.0), 3)
    assert np.array_equal(supercell.counts, 8 * primitive.counts)
    # with images of one atom meeting each other, pairs include (i, i + shift)
    assert primitive.counts[1] > 0


def test_molecules_are_found_by_covalent_connectivity():
    from ase.build import molecule

    from ase_bodyorder.expansion import molecules

    water = molecule("H2O")
    methane = molecule("CH4")
    methane.positions += [4.0, 0.0, 0.0]
    second_water = molecule("H2O")
    second_water.positions += [0.0, 4.5, 0.0]
    atoms = water + methane + second_water
    groups = molecules(atoms)
    assert sorted(map(sorted, groups)) == [[0, 1, 2], [3, 4, 5, 6, 7], [8, 9, 10]]


@pytest.mark.parametrize("pbc", [False, True, (True, False, True)])
def test_neighbour_pairs_without_torch_equal_vesin(pbc):
    """The body graph's atom pairs come from vesin once torch is loaded and from ASE's
    neighbour list before (so that the ASE-calculator path never loads torch): both
    must give the same pairs with the same shifts."""
    import sys

    import torch  # noqa: F401  (makes atom_pairs take the vesin path)

    from ase_bodyorder.expansion import atom_pairs

    rng = np.random.default_rng(8)
    box = np.array([[7.0, 0.0, 0.0], [1.0, 6.5, 0.0], [0.5, 0.8, 7.5]])
    positions = rng.uniform(0, 1, (60, 3)) @ box
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    with_vesin = atom_pairs(positions, box, pbc, 3.1)
    saved = sys.modules.pop("torch")
    try:
        with_ase = atom_pairs(positions, box, pbc, 3.1)
    finally:
        sys.modules["torch"] = saved

    def rows(pairs):
        return sorted(map(tuple, np.column_stack(pairs).tolist()))

    assert len(with_vesin[0]) > 100
    assert rows(with_vesin) == rows(with_ase)

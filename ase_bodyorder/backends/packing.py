"""Neighbour pairs within each subcluster of a packed batch (torch).

Packed evaluation puts many subclusters into one system; the neighbour lists given to
the model must stay inside each subcluster so that they cannot see each other whatever
their positions (docs/design.md, "Packing").
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["intra_cluster_pairs"]


def intra_cluster_pairs(
    positions: torch.Tensor, ptr: np.ndarray, cutoff: float, full_list: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (i, j) of atoms in the same cluster closer than ``cutoff``.

    Built directly from the cluster layout (clusters are tiny), so that atoms of
    different clusters never see each other whatever their positions. Clusters of equal
    size share one index pattern, which keeps this vectorised.
    """
    sizes = np.diff(ptr)
    starts = np.asarray(ptr[:-1])
    first, second = [], []
    for size in np.unique(sizes):
        if size < 2:
            continue
        local_i, local_j = np.triu_indices(size, k=1)
        base = starts[sizes == size][:, None]
        first.append((base + local_i).ravel())
        second.append((base + local_j).ravel())
    device = positions.device
    if not first:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty
    i = torch.from_numpy(np.concatenate(first)).to(device)
    j = torch.from_numpy(np.concatenate(second)).to(device)
    with torch.no_grad():
        distance = torch.linalg.norm(positions[j] - positions[i], dim=1)
    keep = distance < cutoff
    i, j = i[keep], j[keep]
    if full_list:
        i, j = torch.cat([i, j]), torch.cat([j, i])
    return i, j

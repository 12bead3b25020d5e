"""Estimate the number of clusters from an embedding, without labels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def estimate_n_clusters(
    embedding: np.ndarray,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    min_fraction: float = 0.005,
    max_clusters: int = 50,
    random_state: int | None = 0,
) -> int:
    """Number of Leiden communities of the embedding's kNN graph that hold a real share of the cells.

    Leiden at ``resolution`` on the symmetrised kNN graph of the (pretrained) embedding; communities
    with fewer than ``max(5, min_fraction · n_cells)`` cells are not counted, since DEC would empty
    them. The count is clipped to ``[2, max_clusters]``.

    Parameters
    ----------
    embedding
        Cells × latent dimensions.
    n_neighbors
        Neighbours per cell in the graph.
    resolution
        Leiden resolution (higher: more clusters).
    min_fraction
        Smallest share of cells a community needs to count.
    max_clusters
        Upper bound of the estimate.
    random_state
        Leiden's seed.

    Returns
    -------
    int
        The estimated number of clusters.
    """
    n = embedding.shape[0]
    membership = leiden_communities(embedding, resolution, n_neighbors, random_state)
    sizes = np.bincount(membership)
    k = int((sizes >= max(5, min_fraction * n)).sum())
    return int(np.clip(k, 2, min(max_clusters, n - 1)))


def _knn_graph(embedding: np.ndarray, n_neighbors: int, random_state: int | None):
    import igraph as ig

    from ..data._graph import adjacency, knn

    n = embedding.shape[0]
    idx, _ = knn(np.asarray(embedding, dtype=np.float32), min(n_neighbors, n - 1), random_state=random_state)
    A = adjacency(idx).tocoo()
    keep = A.row < A.col
    return ig.Graph(n=n, edges=list(zip(A.row[keep].tolist(), A.col[keep].tolist(), strict=True)))


def leiden_communities(
    embedding: np.ndarray, resolution: float = 1.0, n_neighbors: int = 15, random_state: int | None = 0, graph=None
) -> np.ndarray:
    """Leiden communities (RB configuration model) of the embedding's symmetrised kNN graph.

    Returns
    -------
    :class:`numpy.ndarray`
        Community number per cell, ``0`` for the largest.
    """
    import leidenalg

    graph = graph if graph is not None else _knn_graph(embedding, n_neighbors, random_state)
    part = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        resolution_parameter=resolution,
        seed=0 if random_state is None else int(random_state),
    )
    return np.asarray(part.membership, dtype=np.int64)


def bisect_resolution(
    partition: Callable[[float], np.ndarray], n_clusters: int, max_steps: int = 30, max_resolution: float = 100.0
) -> np.ndarray:
    """The labels of ``partition(resolution)`` with the resolution bisected until there are ``n_clusters`` groups.

    ``partition`` maps a resolution to labels ``0 … m-1`` (more groups at higher resolution, as for
    Leiden). When no resolution gives exactly ``n_clusters`` within ``max_steps`` bisections, the
    labels with the closest number of groups (fewer preferred) are returned.
    """

    def count(resolution: float) -> tuple[int, np.ndarray]:
        labels = np.asarray(partition(resolution))
        return int(labels.max()) + 1, labels

    lo, hi = 0.0, 1.0
    k_hi, labels = count(hi)
    while k_hi < n_clusters and hi < max_resolution:  # grow the upper bound until it gives enough groups
        lo, hi = hi, hi * 2
        k_hi, labels = count(hi)
    best_k, best = k_hi, labels
    for _ in range(max_steps):
        if best_k == n_clusters:
            break
        mid = (lo + hi) / 2
        k_mid, labels = count(mid)
        lo, hi = (lo, mid) if k_mid > n_clusters else (mid, hi)
        if (abs(k_mid - n_clusters), k_mid > n_clusters) < (abs(best_k - n_clusters), best_k > n_clusters):
            best_k, best = k_mid, labels
    return best


def leiden_at_k(
    embedding: np.ndarray, n_clusters: int, n_neighbors: int = 15, random_state: int | None = 0, max_steps: int = 30
) -> np.ndarray:
    """Leiden communities with the resolution bisected until there are ``n_clusters`` of them.

    When no resolution gives exactly ``n_clusters`` within ``max_steps`` bisections, the partition
    with the closest number of communities (fewer preferred) is returned (see :func:`bisect_resolution`).
    """
    graph = _knn_graph(embedding, n_neighbors, random_state)
    return bisect_resolution(
        lambda r: leiden_communities(embedding, r, random_state=random_state, graph=graph), n_clusters, max_steps
    )

"""Estimate the number of clusters from an embedding, without labels."""

from __future__ import annotations

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
    import igraph as ig
    import leidenalg

    from ..data._graph import adjacency, knn

    n = embedding.shape[0]
    idx, _ = knn(np.asarray(embedding, dtype=np.float32), min(n_neighbors, n - 1), random_state=random_state)
    A = adjacency(idx).tocoo()
    keep = A.row < A.col
    graph = ig.Graph(n=n, edges=list(zip(A.row[keep].tolist(), A.col[keep].tolist(), strict=True)))
    part = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        resolution_parameter=resolution,
        seed=0 if random_state is None else int(random_state),
    )
    sizes = np.bincount(np.asarray(part.membership))
    k = int((sizes >= max(5, min_fraction * n)).sum())
    return int(np.clip(k, 2, min(max_clusters, n - 1)))

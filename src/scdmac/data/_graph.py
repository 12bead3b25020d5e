"""Cell k-nearest-neighbour graphs, always sparse."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

#: Above this many cells the approximate search of pynndescent beats an exact search (its numba
#: kernels compile once per process, about 20 s here, so it does not pay below that).
EXACT_KNN_MAX_CELLS = 100_000


def knn(X: np.ndarray, n_neighbors: int, metric: str = "euclidean", random_state: int | None = 0):
    """Indices and distances of each cell's ``n_neighbors`` nearest other cells.

    Parameters
    ----------
    X
        Cells × features (dense).
    n_neighbors
        Neighbours per cell, self excluded.
    metric
        ``"euclidean"`` or ``"cosine"``.
    random_state
        Seed of the approximate search (used above :data:`EXACT_KNN_MAX_CELLS` cells).

    Returns
    -------
    indices, distances
        ``(n_cells, n_neighbors)`` arrays: int64 and float32.
    """
    n = X.shape[0]
    if n <= EXACT_KNN_MAX_CELLS:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=n_neighbors + 1, metric=metric, algorithm="brute").fit(X)
        dist, idx = nn.kneighbors(X)
    else:
        from pynndescent import NNDescent

        index = NNDescent(X, n_neighbors=n_neighbors + 1, metric=metric, random_state=random_state)
        idx, dist = index.neighbor_graph
    return _drop_self(idx, dist, n_neighbors)


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int):
    """Remove each row's own index (duplicated cells may list another cell first)."""
    rows = np.arange(idx.shape[0])[:, None]
    is_self = idx == rows
    # keep the first k entries that are not the cell itself
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, 1).astype(np.int64), np.take_along_axis(dist, order, 1).astype(np.float32)


def adjacency(indices: np.ndarray, symmetric: bool = True) -> sp.csr_matrix:
    """Binary sparse adjacency from neighbour indices; symmetrised with ``max(A, Aᵀ)``."""
    n, k = indices.shape
    A = sp.csr_matrix((np.ones(n * k, dtype=np.float32), (np.repeat(np.arange(n), k), indices.ravel())), shape=(n, n))
    if symmetric:
        A = A.maximum(A.T)
    A.setdiag(0)
    A.eliminate_zeros()
    return A.tocsr()


def normalized_adjacency(A: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 (A + I) D^-1/2``, sparse."""
    A = sp.csr_matrix(A, dtype=np.float32) + sp.identity(A.shape[0], dtype=np.float32, format="csr")
    d = np.asarray(A.sum(axis=1)).ravel()
    inv_sqrt = sp.diags((1.0 / np.sqrt(d)).astype(np.float32))
    return (inv_sqrt @ A @ inv_sqrt).tocsr()


def _to_torch(A: sp.spmatrix, device=None) -> torch.Tensor:
    A = sp.coo_matrix(A)
    index = torch.from_numpy(np.vstack([A.row, A.col]).astype(np.int64))
    values = torch.from_numpy(A.data.astype(np.float32))
    # the indices come from a valid scipy matrix: skip torch's invariant checks, and say so
    return torch.sparse_coo_tensor(index, values, A.shape, device=device, check_invariants=False).coalesce()


class CellGraph:
    """A symmetric cell kNN graph kept sparse, with the pieces graph networks need per minibatch.

    Parameters
    ----------
    indices
        ``(n_cells, k)`` neighbour positions (self excluded), as registered by ``setup_anndata``.
    """

    def __init__(self, indices: np.ndarray):
        self.adjacency = adjacency(np.asarray(indices, dtype=np.int64))

    @property
    def n_cells(self) -> int:
        """Number of cells (nodes)."""
        return self.adjacency.shape[0]

    def normalized(self, device=None) -> torch.Tensor:
        """``D^-1/2 (A + I) D^-1/2`` over all cells as a sparse torch tensor."""
        return _to_torch(normalized_adjacency(self.adjacency), device)

    def subgraph(self, cells: np.ndarray) -> dict[str, torch.Tensor]:
        """The graph induced by ``cells``, in their order.

        Returns
        -------
        dict
            ``"adj"``: the subgraph's normalised adjacency with self-loops (sparse, cells lacking
            neighbours among ``cells`` keep only their self-loop); ``"edges"``: ``(2, E)`` positions
            of each undirected edge once.
        """
        sub = self.adjacency[cells][:, cells]
        upper = sp.triu(sub, k=1).tocoo()
        edges = torch.from_numpy(np.vstack([upper.row, upper.col]).astype(np.int64))
        return {"adj": _to_torch(normalized_adjacency(sub)), "edges": edges}


def partition_cells(X: np.ndarray, partition_size: int, random_state: int = 0) -> np.ndarray:
    """Split cells into compact groups of about ``partition_size`` cells by k-means on ``X``.

    The kNN graph is built on the same coordinates, so most of a cell's neighbours share its group:
    minibatches made of whole groups keep most edges (Cluster-GCN's idea, with k-means standing in
    for a graph partitioner).

    Returns
    -------
    :class:`numpy.ndarray`
        Group number (int64) per cell.
    """
    from sklearn.cluster import KMeans

    n_groups = max(1, int(round(X.shape[0] / partition_size)))
    if n_groups == 1:
        return np.zeros(X.shape[0], dtype=np.int64)
    return KMeans(n_groups, n_init=1, max_iter=50, random_state=random_state).fit_predict(X).astype(np.int64)

"""Cell k-nearest-neighbour graphs, always sparse."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from ._device import fits_on_gpu

#: Up to this many cells, ``method="auto"`` searches exactly (a chunked brute-force search on
#: BLAS); above it, approximately with pynndescent (its cost grows as ``n log n``, not ``n²``; its
#: numba kernels compile once per process, about 20 s here, so it does not pay below that).
EXACT_KNN_MAX_CELLS = 100_000

#: On a GPU, ``method="auto"`` searches exactly up to this many reference rows: blocks of one matrix
#: product and a top-k each, in torch (time grows as ``n²``; the arithmetic of 1,000,000 cells on 50
#: coordinates, 10¹⁴ operations, is about two seconds of an H100's float32 throughput).
GPU_EXACT_KNN_MAX_CELLS = 2_000_000

#: Distances a GPU search computes at once (2²⁸ float32: 1 GiB).
GPU_KNN_BLOCK_VALUES = 2**28

KnnMethod = Literal["auto", "exact", "approximate"]
SearchDevice = str | torch.device | None


def knn(
    X: np.ndarray,
    n_neighbors: int,
    metric: str = "euclidean",
    random_state: int | None = 0,
    method: KnnMethod = "auto",
    device: SearchDevice = "auto",
):
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
        Seed of the approximate search.
    method
        ``"exact"``: brute force, in memory blocks of scikit-learn's pairwise engine (all cores;
        time grows as ``n²``). Cosine neighbours are found as Euclidean ones between unit vectors,
        which orders them the same (``‖u − v‖² = 2 − 2 cos``) and takes scikit-learn's BLAS path.
        ``"approximate"``: pynndescent's nearest-neighbour descent with the metric itself (all
        cores, memory linear in cells). ``"auto"``: exact up to :data:`EXACT_KNN_MAX_CELLS` cells,
        or on a GPU (see ``device``) up to :data:`GPU_EXACT_KNN_MAX_CELLS`.
    device
        Where an exact search runs. ``"auto"``: on the GPU when PyTorch sees one and the rows take at
        most a quarter of its free memory (the share the counts may take in training,
        ``train(counts_on_device="auto")``), else on the CPU with scikit-learn.
        A torch device (``"cuda:1"``, ``"cpu"``) runs it there in torch; ``None``: scikit-learn.

    Returns
    -------
    indices, distances
        ``(n_cells, n_neighbors)`` arrays: int64 and float32 (cosine: ``1 − cos``).
    """
    _check_search(metric, method)
    idx, dist = search(X, X, n_neighbors + 1, metric=metric, random_state=random_state, method=method, device=device)
    return _drop_self(idx, dist, n_neighbors)


def _check_search(metric: str, method: str) -> None:
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}.")
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"method must be 'auto', 'exact' or 'approximate', got {method!r}.")


def search(
    reference: np.ndarray,
    query: np.ndarray,
    n_neighbors: int,
    metric: str = "euclidean",
    random_state: int | None = 0,
    method: KnnMethod = "auto",
    device: SearchDevice = "auto",
):
    """Indices and distances of each query row's ``n_neighbors`` nearest ``reference`` rows.

    The engine behind :func:`knn` (``query`` is ``reference`` there). To search the same reference
    many times, build a :class:`NeighborIndex` once.

    Parameters
    ----------
    reference
        Rows × features searched (dense).
    query
        Rows × features whose neighbours are sought (when it is ``reference`` itself, rows are not left
        out of their own neighbours).
    n_neighbors
        Neighbours per query row (fewer when ``reference`` has fewer rows).
    metric, random_state, method, device
        As for :func:`knn` (``"auto"`` decides by the number of reference rows).

    Returns
    -------
    indices, distances
        ``(n_query, n_neighbors)`` arrays: int64 positions in ``reference`` and float32 distances.
    """
    index = NeighborIndex(reference, metric, method, random_state, n_neighbors, device)
    if query is reference and not index.exact:
        # the approximate index's own graph answers a search of the reference itself without a second pass
        idx, dist = index.index.neighbor_graph
        return np.asarray(idx, dtype=np.int64), np.asarray(dist, dtype=np.float32)
    return index.query(query, n_neighbors)


class NeighborIndex:
    """Reference rows prepared once for nearest-neighbour queries (exact or pynndescent, see :func:`knn`).

    Parameters
    ----------
    reference
        Rows × features.
    metric, method, random_state, device
        As for :func:`knn`.
    n_neighbors
        Neighbours the approximate index is built for (queries may ask for others).
    """

    def __init__(
        self,
        reference: np.ndarray,
        metric: str = "euclidean",
        method: KnnMethod = "auto",
        random_state: int | None = 0,
        n_neighbors: int = 15,
        device: SearchDevice = "auto",
    ):
        _check_search(metric, method)
        self.metric = metric
        self.n_rows = reference.shape[0]
        self.device = _search_device(device, reference)
        exact_max = EXACT_KNN_MAX_CELLS if self.device is None else GPU_EXACT_KNN_MAX_CELLS
        self.exact = method == "exact" or (method == "auto" and self.n_rows <= exact_max)
        #: the reference rows and their squared norms on ``device`` (a torch search), else None
        self.on_device: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.exact and self.device is not None:
            rows = torch.from_numpy(_for_exact(reference, metric)).to(self.device)
            self.on_device = (rows, (rows * rows).sum(1))
        elif self.exact:
            from sklearn.neighbors import NearestNeighbors

            self.index = NearestNeighbors(algorithm="brute", n_jobs=-1).fit(_for_exact(reference, metric))
        else:
            from pynndescent import NNDescent

            self.index = NNDescent(
                reference,
                n_neighbors=int(min(n_neighbors, self.n_rows)),
                metric=metric,
                random_state=random_state,
                n_jobs=-1,
                compressed=True,
            )

    def query(self, X: np.ndarray, n_neighbors: int):
        """Indices (int64) and distances (float32) of each row's ``n_neighbors`` nearest reference rows.

        Parameters
        ----------
        X
            Rows × features, in the reference's coordinates.
        n_neighbors
            Neighbours per row (fewer when the reference has fewer rows).

        Returns
        -------
        indices, distances
            ``(n_rows, n_neighbors)`` arrays: positions in the reference and distances (cosine: ``1 − cos``).
        """
        k = int(min(n_neighbors, self.n_rows))
        if self.on_device is not None:
            idx, dist = _torch_search(*self.on_device, _for_exact(X, self.metric), k)
            dist = dist / 2 if self.metric == "cosine" else np.sqrt(dist)
        elif self.exact:
            dist, idx = self.index.kneighbors(_for_exact(X, self.metric), n_neighbors=k)
            if self.metric == "cosine":
                dist = dist**2 / 2
        else:
            idx, dist = self.index.query(np.asarray(X), k=k)
        return np.asarray(idx, dtype=np.int64), np.asarray(dist, dtype=np.float32)


def _search_device(device: SearchDevice, reference: np.ndarray) -> torch.device | None:
    """The torch device of an exact search (``None``: scikit-learn on the CPU); see :func:`knn`."""
    if device is None:
        return None
    if not (isinstance(device, str) and device == "auto"):
        return torch.device(device)
    if not torch.cuda.is_available():
        return None
    # float32 rows and their squared norms
    return torch.device("cuda") if fits_on_gpu(4 * reference.shape[0] * (reference.shape[1] + 1)) else None


def _torch_search(reference: torch.Tensor, squared_norms: torch.Tensor, X: np.ndarray, k: int):
    """Exact nearest reference rows of the rows of ``X`` on ``reference``'s device, a block of rows at a time.

    Returns positions (int64) and squared Euclidean distances (float32, clipped at 0), as numpy arrays.
    """
    device = reference.device
    rows = max(1, GPU_KNN_BLOCK_VALUES // max(reference.shape[0], 1))
    indices, distances = [], []
    with torch.no_grad():
        for start in range(0, X.shape[0], rows):
            block = torch.from_numpy(np.ascontiguousarray(X[start : start + rows])).to(device)
            # ‖q − r‖² = ‖q‖² − 2 q·r + ‖r‖², the product on the matrix units
            squared = torch.addmm(squared_norms[None, :], block, reference.T, alpha=-2.0)
            squared += (block * block).sum(1, keepdim=True)
            dist, idx = torch.topk(squared, k, dim=1, largest=False, sorted=True)
            indices.append(idx.cpu())
            distances.append(dist.clamp_min_(0.0).cpu())
    return torch.cat(indices).numpy().astype(np.int64), torch.cat(distances).numpy().astype(np.float32)


def _for_exact(X: np.ndarray, metric: str) -> np.ndarray:
    """float32 rows; unit rows for cosine, whose neighbours are then the Euclidean ones."""
    X = np.asarray(X, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(norms > 0, norms, 1.0)
    return X


class BalancedIndex:
    """One :class:`NeighborIndex` per group of reference rows, queried for neighbours from every group.

    Parameters
    ----------
    reference
        Rows × features.
    groups
        Group (sample) of each reference row.
    metric, method, random_state
        As for :func:`knn`.
    per_group
        Neighbours per group the approximate indexes are built for.
    """

    def __init__(
        self,
        reference: np.ndarray,
        groups: np.ndarray,
        metric: str = "euclidean",
        method: KnnMethod = "auto",
        random_state: int | None = 0,
        per_group: int = 5,
    ):
        groups = np.asarray(groups)
        self.parts = []
        for group in np.unique(groups):
            members = np.flatnonzero(groups == group)
            self.parts.append((members, NeighborIndex(reference[members], metric, method, random_state, per_group)))

    def query(self, X: np.ndarray, per_group: int, exclude_self: bool = False):
        """Each row's ``per_group`` nearest reference rows in every group (see :func:`balanced_search`).

        Parameters
        ----------
        X
            Rows × features, in the reference's coordinates.
        per_group
            Neighbours taken from each group.
        exclude_self
            ``X`` is the reference: leave each row out of its own neighbours.

        Returns
        -------
        indices, distances
            ``(n_rows, per_group × n_groups)`` positions in the reference and distances, each group's
            neighbours in turn; a group with fewer rows repeats its last neighbour.
        """
        indices, distances = [], []
        for members, index in self.parts:
            idx, dist = index.query(X, per_group + 1 if exclude_self else per_group)
            idx = members[idx]
            if exclude_self and idx.shape[1] > 1:
                # a cell is among its own group's nearest: drop it (from the other groups, the extra one)
                idx, dist = _drop_self(idx, dist, min(per_group, idx.shape[1] - 1))
            # a small group gives fewer neighbours: repeat the last so every group fills its columns
            if idx.shape[1] < per_group:
                pad = per_group - idx.shape[1]
                idx = np.concatenate([idx, np.repeat(idx[:, -1:], pad, 1)], 1)
                dist = np.concatenate([dist, np.repeat(dist[:, -1:], pad, 1)], 1)
            indices.append(idx)
            distances.append(dist)
        return np.concatenate(indices, 1), np.concatenate(distances, 1)


def balanced_search(
    reference: np.ndarray,
    reference_groups: np.ndarray,
    query: np.ndarray,
    per_group: int,
    metric: str = "euclidean",
    random_state: int | None = 0,
    method: KnnMethod = "auto",
    exclude_self: bool = False,
):
    """Each query row's ``per_group`` nearest reference rows in every group (BBKNN's neighbourhood).

    Parameters
    ----------
    reference, query
        Rows × features.
    reference_groups
        Group (sample) of each reference row.
    per_group
        Neighbours taken from each group (fewer from a group that has fewer rows).
    metric, random_state, method
        As for :func:`search`.
    exclude_self
        ``query`` is ``reference``: leave each row out of its own neighbours.

    Returns
    -------
    indices, distances
        ``(n_query, per_group × n_groups)`` positions in ``reference`` (int64) and distances, each
        group's neighbours in turn; a group with fewer rows repeats its last neighbour.
    """
    index = BalancedIndex(reference, reference_groups, metric, method, random_state, per_group + int(exclude_self))
    return index.query(query, per_group, exclude_self)


def balanced_knn(
    X: np.ndarray,
    groups: np.ndarray,
    n_neighbors: int,
    metric: str = "euclidean",
    random_state: int | None = 0,
    method: KnnMethod = "auto",
):
    """Batch-balanced kNN: each cell's nearest cells in every group, ``n_neighbors`` in all (BBKNN's idea).

    With cells from several samples, a plain kNN graph links cells mostly within their own sample;
    taking ``ceil(n_neighbors / n_groups)`` neighbours from each sample links every cell to its
    closest counterparts in all of them, so graph-based smoothing and neighbour swaps mix samples.

    Parameters
    ----------
    X
        Cells × features (dense).
    groups
        Group (sample) of each cell.
    n_neighbors
        Neighbours per cell in all groups together, self excluded.
    metric, random_state, method
        As for :func:`knn`.

    Returns
    -------
    indices, distances
        ``(n_cells, ceil(n_neighbors / n_groups) × n_groups)`` arrays (self excluded).
    """
    n_groups = len(np.unique(groups))
    per_group = max(1, -(-n_neighbors // n_groups))
    return balanced_search(
        X, groups, X, per_group, metric=metric, random_state=random_state, method=method, exclude_self=True
    )


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int):
    """Remove each row's own index (duplicated cells may list another cell first)."""
    rows = np.arange(idx.shape[0])[:, None]
    is_self = idx == rows
    # keep the first k entries that are not the cell itself
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, 1).astype(np.int64), np.take_along_axis(dist, order, 1).astype(np.float32)


def neighbourhood_mean(X: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Each row of ``X`` averaged with its ``k`` neighbours' rows, by one sparse product.

    Parameters
    ----------
    X
        Rows × features.
    indices
        ``(n, k)`` neighbour positions of each row (a neighbour listed twice counts twice).

    Returns
    -------
    :class:`numpy.ndarray`
        The averaged rows, float32, of ``X``'s shape.
    """
    n, k = indices.shape
    A = sp.csr_matrix((np.ones(n * k, dtype=np.float32), indices.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    return ((X + A @ X) / (k + 1)).astype(np.float32)


def neighbour_links(indices: np.ndarray, n_columns: int) -> sp.csr_matrix:
    """Binary sparse matrix with a 1 at ``(i, indices[i, j])``, float32.

    A neighbour listed twice in a row (a small sample's padding in a balanced graph) is one link.

    Parameters
    ----------
    indices
        ``(n, k)`` neighbour positions of each row.
    n_columns
        Number of columns: the rows the positions point into.

    Returns
    -------
    :class:`scipy.sparse.csr_matrix`
        ``(n, n_columns)`` links.
    """
    n, k = indices.shape
    links = sp.csr_matrix(
        (np.ones(n * k, dtype=np.float32), (np.repeat(np.arange(n), k), indices.ravel())), shape=(n, n_columns)
    )
    links.sum_duplicates()
    links.data[:] = 1.0
    return links


def adjacency(indices: np.ndarray, symmetric: bool = True) -> sp.csr_matrix:
    """Binary sparse adjacency from neighbour indices, without self-loops.

    Parameters
    ----------
    indices
        ``(n_cells, k)`` neighbour positions of each cell.
    symmetric
        Symmetrise with ``max(A, Aᵀ)``: cells are linked when either lists the other.

    Returns
    -------
    :class:`scipy.sparse.csr_matrix`
        ``(n_cells, n_cells)`` float32 adjacency.
    """
    A = neighbour_links(indices, indices.shape[0])
    if symmetric:
        A = A.maximum(A.T)
    A.setdiag(0)
    A.eliminate_zeros()
    return A.tocsr()


def normalized_adjacency(A: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 (A + I) D^-1/2``, sparse.

    Parameters
    ----------
    A
        Square adjacency (without self-loops: ``I`` adds them); ``D`` is the degree of ``A + I``.

    Returns
    -------
    :class:`scipy.sparse.csr_matrix`
        The normalised adjacency, float32.
    """
    A = sp.csr_matrix(A, dtype=np.float32) + sp.identity(A.shape[0], dtype=np.float32, format="csr")
    d = np.asarray(A.sum(axis=1)).ravel()
    inv_sqrt = sp.diags((1.0 / np.sqrt(d)).astype(np.float32))
    return (inv_sqrt @ A @ inv_sqrt).tocsr()


def _to_torch(A: sp.spmatrix, device=None) -> torch.Tensor:
    """A scipy sparse matrix as a coalesced sparse COO torch tensor of float32 values.

    Parameters
    ----------
    A
        Any scipy sparse matrix.
    device
        Where the tensor is made (``None``: the CPU).

    Returns
    -------
    :class:`torch.Tensor`
        Sparse COO, of ``A``'s shape.
    """
    A = sp.coo_matrix(A)
    index = torch.from_numpy(np.vstack([A.row, A.col]).astype(np.int64))
    values = torch.from_numpy(A.data.astype(np.float32))
    # the indices come from a valid scipy matrix: skip torch's invariant checks, and say so
    return torch.sparse_coo_tensor(index, values, A.shape, device=device, check_invariants=False).coalesce()


#: Cells per row block of the whole-graph adjacency (:meth:`CellGraph.normalized`): a block's
#: temporaries at a 2,000-wide layer are then some 200 MB, and the blocks' own overhead negligible.
ADJACENCY_BLOCK_ROWS = 4096


class CellGraph:
    """A symmetric cell kNN graph kept sparse, with the pieces graph networks need per minibatch.

    Parameters
    ----------
    indices
        ``(n_cells, k)`` neighbour positions (self excluded), as registered by ``setup_anndata``.
    """

    def __init__(self, indices: np.ndarray):
        self.adjacency = adjacency(np.asarray(indices, dtype=np.int64))
        self._normalized: dict[tuple[str, int], list[torch.Tensor]] = {}

    @property
    def n_cells(self) -> int:
        """Number of cells (nodes)."""
        return self.adjacency.shape[0]

    def normalized(self, device=None, block_rows: int = ADJACENCY_BLOCK_ROWS) -> list[torch.Tensor]:
        """``D^-1/2 (A + I) D^-1/2`` over all cells, as sparse torch row blocks (built once per device).

        The blocks hold consecutive runs of at most ``block_rows`` cells (rows, equally many in each)
        against all cells (columns) and stack to the whole matrix: a whole-graph pass computes each
        layer one block at a time (:class:`~scdmac.module.FusionEncoder`), so its temporaries stay a
        block's size. Every target refresh of a clustering stage embeds all cells through them:
        building and coalescing them again each time cost as much as the embedding on large graphs.

        Parameters
        ----------
        device
            Where the blocks live.
        block_rows
            Most cells per block (default :data:`ADJACENCY_BLOCK_ROWS`); at least the number of cells
            gives one block, the whole matrix.
        """
        key = (str(torch.device(device) if device is not None else torch.device("cpu")), block_rows)
        if key not in self._normalized:
            whole = normalized_adjacency(self.adjacency)
            # blocks of equal size, never a sliver: matrix products over a few rows take other
            # kernels, whose rounding would make the blocked pass differ from the whole one
            n_blocks = -(-whole.shape[0] // block_rows)
            ends = np.linspace(0, whole.shape[0], n_blocks + 1).round().astype(np.int64)
            self._normalized[key] = [_to_torch(whole[a:b], device) for a, b in zip(ends[:-1], ends[1:], strict=True)]
        return self._normalized[key]

    def subgraph(self, cells: np.ndarray) -> dict[str, torch.Tensor]:
        """The graph induced by ``cells``, in their order.

        Parameters
        ----------
        cells
            Positions of the cells, e.g. a minibatch's.

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


#: Above this many cells, the k-means of the partition is fitted on a random sample of
#: :data:`PARTITION_FIT_CELLS_PER_GROUP` cells per group (fewer iterations), then every cell is
#: assigned to its nearest centre: with hundreds of groups or more a fit on all cells would cost
#: ``cells × groups`` per iteration.
PARTITION_SAMPLE_ABOVE = 20_000
PARTITION_FIT_CELLS_PER_GROUP = 16


def partition_cells(X: np.ndarray, partition_size: int, random_state: int = 0) -> np.ndarray:
    """Split cells into compact groups of about ``partition_size`` cells by k-means on ``X``.

    The kNN graph is built on the same coordinates, so most of a cell's neighbours share its group:
    minibatches made of whole groups keep most edges (Cluster-GCN's idea, with k-means standing in
    for a graph partitioner). Above :data:`PARTITION_SAMPLE_ABOVE` cells the centres start at random
    cells of a random sample, are fitted on it and all cells then assigned to the nearest one.

    Parameters
    ----------
    X
        Cells × coordinates (e.g. principal components).
    partition_size
        Cells per group, on average: ``round(n_cells / partition_size)`` groups (at least one).
    random_state
        Seed of the k-means (and of the sample of large data).

    Returns
    -------
    :class:`numpy.ndarray`
        Group number (int64) per cell.
    """
    from sklearn.cluster import KMeans

    n_groups = max(1, int(round(X.shape[0] / partition_size)))
    if n_groups == 1:
        return np.zeros(X.shape[0], dtype=np.int64)
    n_fit = n_groups * PARTITION_FIT_CELLS_PER_GROUP
    if X.shape[0] <= PARTITION_SAMPLE_ABOVE or X.shape[0] <= n_fit:
        return KMeans(n_groups, n_init=1, max_iter=50, random_state=random_state).fit_predict(X).astype(np.int64)
    rows = np.random.default_rng(random_state).choice(X.shape[0], n_fit, replace=False)
    # centres started at random sample cells, not by k-means++: its seeding costs cells x groups x
    # log(groups) distances, more than the fit itself with thousands of groups, and compact groups
    # (not the best of many local optima) are all a minibatch needs
    kmeans = KMeans(n_groups, init="random", n_init=1, max_iter=20, random_state=random_state)
    kmeans.fit(X[np.sort(rows)])
    groups = kmeans.predict(X)
    # centres fitted on a sample may be nobody's nearest: renumber the groups densely
    return np.unique(groups, return_inverse=True)[1].astype(np.int64)

"""Library sizes, log-normalisation and highly variable genes, computed without touching the user's AnnData."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4

#: Rows read at once from a matrix backed on disk.
CHUNK_CELLS = 20_000

#: On a matrix backed on disk, genes are selected on a random sample of at most this many cells.
GENE_SELECTION_CELLS = 100_000

#: From this many cells on, a sparse matrix's principal components come from the genes' covariance
#: matrix instead of ARPACK; both are exact. On 2,000 genes ARPACK was faster at 100,000 cells (16.5 s
#: against 24.7 s), the covariance at 300,000 (50 s against 76 s) and 1,000,000 (166 s against 205-268 s).
COVARIANCE_PCA_MIN_CELLS = 200_000

#: The noise threshold on principal components is computed on at most this many cells (a random sample).
SIGNAL_SAMPLE_CELLS = 20_000

#: Fewest components kept when the components above the noise are counted: neighbours found on fewer
#: coordinates would be ranked along a line or two.
MIN_SIGNAL_COMPONENTS = 10


def in_memory(X) -> bool:
    """Whether ``X`` is an in-memory matrix (numpy or scipy), as opposed to one backed on disk."""
    return isinstance(X, np.ndarray) or sp.issparse(X)


def row_chunks(X, chunk_size: int = CHUNK_CELLS) -> Iterator[tuple[int, sp.csr_matrix]]:
    """``(first row, block)`` over ``X`` in blocks of ``chunk_size`` rows, each an in-memory CSR matrix.

    Works on in-memory matrices and on AnnData's backed ones (h5ad/zarr, dense or sparse), reading
    one block at a time, so memory stays bounded by the block.
    """
    for start in range(0, X.shape[0], chunk_size):
        yield start, sp.csr_matrix(X[start : min(start + chunk_size, X.shape[0])])


def library_size(counts) -> np.ndarray:
    """Total counts per cell as float64 (read in blocks when ``counts`` is backed on disk)."""
    if not in_memory(counts):
        return np.concatenate([library_size(block) for _, block in row_chunks(counts)])
    return np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()


def log_normalize(counts, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """``log1p(counts / library * target_sum)`` as a float32 CSR matrix (a new matrix, input untouched)."""
    X = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    scale = (target_sum / library_size(X)).astype(np.float32)
    X = sp.csr_matrix(sp.diags(scale) @ X)
    np.log1p(X.data, out=X.data)
    return X


def highly_variable_genes(log_counts, n_top_genes: int, gene_min_cells: int = 1) -> np.ndarray:
    """Boolean mask of the ``n_top_genes`` most variable genes (Scanpy's ``seurat`` flavour).

    Genes detected in fewer than ``gene_min_cells`` cells are never selected; where fewer genes than
    ``n_top_genes`` remain, all of them are kept.
    """
    import anndata as ad
    import scanpy as sc

    detected = np.asarray((log_counts > 0).sum(axis=0)).ravel() >= gene_min_cells
    if detected.sum() == 0:
        raise ValueError("No gene is detected in enough cells to be used.")
    if detected.sum() <= n_top_genes:
        return detected
    tmp = ad.AnnData(sp.csr_matrix(log_counts)[:, detected])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat")
    mask = np.zeros(log_counts.shape[1], dtype=bool)
    mask[np.flatnonzero(detected)[tmp.var["highly_variable"].to_numpy()]] = True
    return mask


def signal_components(X, random_state: int | None = 0) -> int:
    """How many principal components of ``X`` stand above its noise.

    Gavish and Donoho's optimal hard threshold for singular values when the noise level is unknown
    (IEEE Trans. Inf. Theory 60, 2014): a component counts when its singular value exceeds
    ``ω(β) · median`` of all singular values of the centred matrix, ``β`` being the ratio of its short
    to its long side. The spectrum comes from the smaller of the genes × genes covariance and the
    cells × cells Gram matrix, on at most :data:`SIGNAL_SAMPLE_CELLS` randomly drawn cells (more
    cells only raise the count, so a sample errs towards fewer components). No labels are used.

    Parameters
    ----------
    X
        Cells × genes matrix (dense or sparse), e.g. log-normalised expression of the selected genes.
    random_state
        Seed of the cell sample drawn from large matrices.

    Returns
    -------
    int
        The number of singular values above the threshold.
    """
    n = X.shape[0]
    if n > SIGNAL_SAMPLE_CELLS:
        rows = np.sort(np.random.default_rng(random_state).choice(n, SIGNAL_SAMPLE_CELLS, replace=False))
        X = X[rows]
        n = SIGNAL_SAMPLE_CELLS
    p = X.shape[1]
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    if sp.issparse(X) and p <= n:
        # the genes x genes product stays sparse until it is small
        X = sp.csr_matrix(X, dtype=np.float64)
        gram = (X.T @ X).toarray() - n * np.outer(mean, mean)
    else:
        centred = (X.toarray() if sp.issparse(X) else np.asarray(X)).astype(np.float64) - mean
        gram = centred.T @ centred if p <= n else centred @ centred.T
    singular = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None))
    beta = min(n, p) / max(n, p)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return int((singular > omega * np.median(singular)).sum())


def pca(X, n_comps: int, random_state: int | None, above_noise: bool = False) -> np.ndarray:
    """Principal components of ``X`` (dense or sparse, centred implicitly) as float32 (see :func:`fit_pca`)."""
    return fit_pca(X, n_comps, random_state, above_noise)[0]


def fit_pca(X, n_comps: int, random_state: int | None, above_noise: bool = False):
    """Principal components of ``X`` as float32, and the fitted scikit-learn PCA (to project new rows).

    With ``above_noise``, at most ``n_comps``: only those above the noise (:func:`signal_components`),
    but at least :data:`MIN_SIGNAL_COMPONENTS`.
    """
    from sklearn.decomposition import PCA

    if above_noise:
        n_comps = min(n_comps, max(MIN_SIGNAL_COMPONENTS, signal_components(X, random_state)))
    n_comps = int(min(n_comps, X.shape[0] - 1, X.shape[1] - 1))
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        # Tall matrices: one pass builds the genes x genes covariance, where ARPACK multiplies by the
        # whole matrix hundreds of times. Smaller data keep ARPACK, so their results stay as they were.
        tall = X.shape[0] >= COVARIANCE_PCA_MIN_CELLS and X.shape[0] >= 10 * X.shape[1]
        solver = "covariance_eigh" if tall else "arpack"
    else:
        solver = "auto"
    model = PCA(n_comps, svd_solver=solver, random_state=random_state)
    return model.fit_transform(X).astype(np.float32), model


def log_expression(counts, gene_indices: np.ndarray) -> sp.csr_matrix:
    """Log-normalised expression of ``gene_indices`` for all cells (library sizes over all genes), in blocks."""
    genes = np.asarray(gene_indices)
    return sp.vstack([log_normalize(block)[:, genes] for _, block in row_chunks(counts)], format="csr")


def selected_log_expression(
    counts, n_top_genes: int, gene_min_cells: int, random_state: int | None = 0
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Highly variable genes and the log-normalised expression of all cells over them.

    For an in-memory matrix the genes are chosen on all cells. For a matrix backed on disk, which
    may not fit in memory, they are chosen on a random sample of :data:`GENE_SELECTION_CELLS` cells
    (all cells when there are fewer; ``gene_min_cells`` scaled to the sample), and the selected
    columns of every cell are then read in blocks: only that smaller matrix is held in memory.

    Returns
    -------
    hvg, log_expression
        Boolean mask over genes; cells × selected genes (float32 CSR).
    """
    if in_memory(counts):
        log_counts = log_normalize(counts)
        hvg = highly_variable_genes(log_counts, n_top_genes, gene_min_cells=gene_min_cells)
        return hvg, log_counts[:, hvg]
    n = counts.shape[0]
    if n <= GENE_SELECTION_CELLS:
        sample, min_cells = np.arange(n), gene_min_cells
    else:
        sample = np.sort(np.random.default_rng(random_state).choice(n, GENE_SELECTION_CELLS, replace=False))
        min_cells = max(1, int(np.ceil(gene_min_cells * GENE_SELECTION_CELLS / n)))
    hvg = highly_variable_genes(log_normalize(counts[sample]), n_top_genes, gene_min_cells=min_cells)
    return hvg, log_expression(counts, np.flatnonzero(hvg))


def log_moments(counts, gene_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance over all cells of the log-normalised expression of ``gene_indices``.

    The expression is what a module computes from a batch of counts (``log1p`` of counts scaled to
    :data:`TARGET_SUM` per cell, library sizes over all genes), so fixed input statistics match it.
    A matrix backed on disk is read in blocks.
    """
    X = log_expression(counts, gene_indices)
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel() - mean**2
    return mean.astype(np.float32), np.maximum(var, 0.0).astype(np.float32)


def sample_log_shift(counts, gene_indices: np.ndarray, samples: np.ndarray, n_samples: int) -> np.ndarray:
    """Each sample's mean log-normalised expression of ``gene_indices`` minus that of all cells.

    Subtracting a cell's row from its expression (what the modules do with a sample registered)
    gives every sample the same mean profile: ComBat's location step, without its shrinkage. Read in
    blocks, so a matrix backed on disk works too.

    Returns
    -------
    :class:`numpy.ndarray`
        ``(n_samples, n_genes)`` float32.
    """
    genes = np.asarray(gene_indices)
    samples = np.asarray(samples, dtype=np.int64)
    sums = np.zeros((n_samples, genes.size))
    for start, block in row_chunks(counts):
        rows = samples[start : start + block.shape[0]]
        indicator = sp.csr_matrix((np.ones(rows.size), (rows, np.arange(rows.size))), shape=(n_samples, rows.size))
        sums += np.asarray((indicator @ log_normalize(block)[:, genes]).todense())
    sizes = np.bincount(samples, minlength=n_samples).astype(np.float64)
    overall = sums.sum(0) / sizes.sum()
    means = sums / np.maximum(sizes, 1.0)[:, None]
    return (means - overall).astype(np.float32)

"""Library sizes, log-normalisation and highly variable genes, computed without touching the user's AnnData."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4


def library_size(counts) -> np.ndarray:
    """Total counts per cell as float64."""
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


def pca(X, n_comps: int, random_state: int | None) -> np.ndarray:
    """Principal components of ``X`` (dense or sparse, centred implicitly) as float32."""
    from sklearn.decomposition import PCA

    n_comps = int(min(n_comps, X.shape[0] - 1, X.shape[1] - 1))
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        solver = "arpack"
    else:
        solver = "auto"
    return PCA(n_comps, svd_solver=solver, random_state=random_state).fit_transform(X).astype(np.float32)


def log_moments(counts, gene_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance over all cells of the log-normalised expression of ``gene_indices``.

    The expression is what a module computes from a batch of counts (``log1p`` of counts scaled to
    :data:`TARGET_SUM` per cell, library sizes over all genes), so fixed input statistics match it.
    """
    X = log_normalize(counts)[:, np.asarray(gene_indices)]
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel() - mean**2
    return mean.astype(np.float32), np.maximum(var, 0.0).astype(np.float32)

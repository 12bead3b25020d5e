from __future__ import annotations

import numpy as np
from anndata import AnnData


def log_hvg_pca(adata: AnnData, seed: int = 0, n_top_genes: int = 2000, n_comps: int = 50) -> AnnData:
    """Scanpy's standard preprocessing on a copy: log-normalise, HVGs, scale, PCA (``obsm["X_pca"]``)."""
    import scanpy as sc

    b = adata.copy()
    sc.pp.filter_genes(b, min_cells=1)
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    if b.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(b, n_top_genes=n_top_genes)
        b = b[:, b.var.highly_variable].copy()
    sc.pp.scale(b, max_value=10)
    sc.tl.pca(b, n_comps=min(n_comps, b.n_vars - 1, b.n_obs - 1), random_state=seed)
    return b


def pca_kmeans(adata: AnnData, n_clusters: int, seed: int = 0) -> np.ndarray:
    """The PCA + k-means baseline on raw counts: :func:`log_hvg_pca`, then k-means (10 restarts)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(log_hvg_pca(adata, seed).obsm["X_pca"])


def leiden_clusters(adata: AnnData, n_clusters: int | None = None, seed: int = 0) -> np.ndarray:
    """Scanpy's Leiden pipeline: :func:`log_hvg_pca`, 15-NN graph, Leiden (igraph flavour).

    At resolution 1 when ``n_clusters`` is ``None``; otherwise the resolution is bisected until
    Leiden returns ``n_clusters`` communities (the peer that is told the true number, as our models are).
    """
    import scanpy as sc

    from ..model._n_clusters import bisect_resolution

    b = log_hvg_pca(adata, seed)
    sc.pp.neighbors(b, n_neighbors=15, random_state=seed)

    def leiden(resolution: float) -> np.ndarray:
        sc.tl.leiden(b, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
        return b.obs["leiden"].cat.codes.to_numpy()

    return leiden(1.0) if n_clusters is None else bisect_resolution(leiden, n_clusters)

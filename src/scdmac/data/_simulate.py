"""The built-in demo data: simulated counts with known cell types."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def simulate(
    n_cells: int = 3000,
    n_genes: int = 2000,
    n_clusters: int = 8,
    de_fraction: float = 0.08,
    de_log_scale: float = 1.0,
    dispersion: float = 2.0,
    dropout_midpoint: float = 0.5,
    mean_library: float = 3000.0,
    seed: int = 0,
    chunk_size: int = 5000,
) -> ad.AnnData:
    """Simulate a raw-count matrix of cell types, in the spirit of Splatter.

    Gene base means are gamma distributed; each type up- or down-regulates its own random
    ``de_fraction`` of genes by log-normal factors; cells draw log-normal library sizes and
    unequal type proportions; counts are negative binomial (gamma–Poisson) and then dropped to zero
    with a probability that falls logistically with the expected count.

    Parameters
    ----------
    n_cells, n_genes, n_clusters
        Matrix size and number of cell types.
    de_fraction
        Fraction of genes differentially expressed in each type.
    de_log_scale
        Standard deviation of the log fold changes.
    dispersion
        Negative binomial inverse dispersion ``θ`` (smaller: noisier).
    dropout_midpoint
        Expected count (log scale: ``log(1 + mean)``) at which half of the values drop out.
    mean_library
        Typical total counts per cell.
    seed
        Random seed (a private generator: no global state is touched).
    chunk_size
        Cells simulated at once, bounding memory for large matrices.

    Returns
    -------
    :class:`~anndata.AnnData`
        Raw counts (CSR, float32) in ``X`` and ``layers["counts"]``, types in ``obs["cell_type"]``.
    """
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.5, 2.0, n_genes)
    base /= base.sum()
    log_fc = np.zeros((n_clusters, n_genes))
    for k in range(n_clusters):
        de = rng.choice(n_genes, max(1, int(de_fraction * n_genes)), replace=False)
        log_fc[k, de] = rng.normal(0.0, de_log_scale, de.size) + np.sign(rng.normal(size=de.size)) * 0.5 * de_log_scale
    profiles = base * np.exp(log_fc)
    profiles /= profiles.sum(1, keepdims=True)
    proportions = rng.dirichlet(np.full(n_clusters, 5.0))
    types = rng.choice(n_clusters, n_cells, p=proportions)
    library = mean_library * rng.lognormal(0.0, 0.3, n_cells)

    chunks = []
    for start in range(0, n_cells, chunk_size):
        sl = slice(start, min(start + chunk_size, n_cells))
        mean = profiles[types[sl]] * library[sl, None]
        counts = rng.poisson(rng.gamma(dispersion, mean / dispersion))
        keep = rng.random(mean.shape) < 1.0 / (1.0 + np.exp(-(np.log1p(mean) - dropout_midpoint) * 4.0))
        chunks.append(sp.csr_matrix((counts * keep).astype(np.float32)))
    X = sp.vstack(chunks, format="csr")
    # a cell left with no counts is not a cell: give it one count of its type's top gene
    empty = np.flatnonzero(np.asarray(X.sum(1)).ravel() == 0)
    if empty.size:
        X = X.tolil()
        for i in empty:
            X[i, int(profiles[types[i]].argmax())] = 1.0
        X = X.tocsr()

    adata = ad.AnnData(X)
    adata.obs_names = [f"cell_{i}" for i in range(n_cells)]
    adata.var_names = [f"gene_{j}" for j in range(n_genes)]
    adata.obs["cell_type"] = pd.Categorical(
        [f"type_{k}" for k in types], categories=[f"type_{k}" for k in range(n_clusters)]
    )
    adata.layers["counts"] = X.copy()
    return adata

"""The built-in demo data: simulated counts with known cell types, type-size imbalance and sample effects."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Type shares of a tissue-like sample: one type holds 45% of the cells, three hold 2-4%.
TISSUE_PROPORTIONS = (0.45, 0.20, 0.12, 0.08, 0.06, 0.04, 0.03, 0.02)


def _proportions(proportions: Sequence[float] | None, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    if proportions is None:
        return rng.dirichlet(np.full(n_clusters, 5.0))
    p = np.asarray(proportions, dtype=np.float64)
    if p.shape != (n_clusters,) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(
            f"proportions must be {n_clusters} non-negative numbers (one per type, n_clusters={n_clusters}), "
            f"got {list(proportions)}."
        )
    return p / p.sum()


def _types(p: np.ndarray, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Type of each cell: each type gets its share of cells, rounded (no type is lost to sampling)."""
    counts = np.floor(p * n_cells).astype(int)
    # hand the cells lost to rounding to the types with the largest remainders
    counts[np.argsort(-(p * n_cells - counts), kind="stable")[: n_cells - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(len(p)), counts))


def simulate(
    n_cells: int = 3000,
    n_genes: int = 2000,
    n_clusters: int = 8,
    de_fraction: float = 0.08,
    de_log_scale: float = 1.0,
    dispersion: float = 2.0,
    dropout_midpoint: float = 0.5,
    mean_library: float = 3000.0,
    proportions: Sequence[float] | None = None,
    n_samples: int = 1,
    sample_library_sd: float = 0.3,
    sample_gene_sd: float = 0.1,
    seed: int = 0,
    chunk_size: int = 5000,
) -> ad.AnnData:
    """Simulate a raw-count matrix of cell types, in the spirit of Splatter.

    Gene base means are gamma distributed; each type up- or down-regulates its own random
    ``de_fraction`` of genes by log-normal factors; cells draw log-normal library sizes; counts are
    negative binomial (gamma–Poisson) and then dropped to zero with a probability that falls
    logistically with the expected count. With ``n_samples > 1`` every cell belongs to one of
    several samples (donors, libraries), each with its own library-size factor and a log-normal
    shift of every gene's mean, the same for all types: the effects a sample-aware model must remove.

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
    proportions
        Share of cells of each type (normalised to sum to one), e.g. :data:`TISSUE_PROPORTIONS` for
        a tissue-like imbalance; each type gets its share, rounded. ``None``: random shares around
        ``1 / n_clusters`` (Dirichlet with concentration 5).
    n_samples
        Number of samples the cells are spread over at random (``obs["sample"]``).
    sample_library_sd
        Standard deviation of each sample's log library-size factor.
    sample_gene_sd
        Standard deviation of each sample's log shift of each gene's mean.
    seed
        Random seed (a private generator: no global state is touched).
    chunk_size
        Cells simulated at once, bounding memory for large matrices.

    Returns
    -------
    :class:`~anndata.AnnData`
        Raw counts (CSR, float32) in ``X`` and ``layers["counts"]``, types in ``obs["cell_type"]``,
        samples in ``obs["sample"]``.

    Examples
    --------
    >>> from scdmac.data import simulate, TISSUE_PROPORTIONS
    >>> adata = simulate(n_cells=2400, proportions=TISSUE_PROPORTIONS, n_samples=3)
    >>> adata.obs["cell_type"].value_counts().min()
    48
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}.")
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.5, 2.0, n_genes)
    base /= base.sum()
    log_fc = np.zeros((n_clusters, n_genes))
    for k in range(n_clusters):
        de = rng.choice(n_genes, max(1, int(de_fraction * n_genes)), replace=False)
        log_fc[k, de] = rng.normal(0.0, de_log_scale, de.size) + np.sign(rng.normal(size=de.size)) * 0.5 * de_log_scale
    profiles = base * np.exp(log_fc)
    profiles /= profiles.sum(1, keepdims=True)
    types = _types(_proportions(proportions, n_clusters, rng), n_cells, rng)
    library = mean_library * rng.lognormal(0.0, 0.3, n_cells)
    samples = np.zeros(n_cells, dtype=np.int64)
    gene_shift = np.ones((1, n_genes))
    if n_samples > 1:
        samples = rng.integers(0, n_samples, n_cells)
        library *= rng.lognormal(0.0, sample_library_sd, n_samples)[samples]
        gene_shift = rng.lognormal(0.0, sample_gene_sd, (n_samples, n_genes))

    chunks = []
    for start in range(0, n_cells, chunk_size):
        sl = slice(start, min(start + chunk_size, n_cells))
        rel = profiles[types[sl]] * gene_shift[samples[sl]]
        mean = rel / rel.sum(1, keepdims=True) * library[sl, None]
        counts = rng.poisson(rng.gamma(dispersion, mean / dispersion))
        keep = rng.random(mean.shape) < 1.0 / (1.0 + np.exp(-(np.log1p(mean) - dropout_midpoint) * 4.0))
        chunks.append(sp.csr_matrix((counts * keep).astype(np.float32)))
    X = sp.vstack(chunks, format="csr")
    # a cell left with no counts is not a cell: give it one count of its type's top gene
    empty = np.flatnonzero(np.asarray(X.sum(1)).ravel() == 0)
    if empty.size:
        fill = sp.csr_matrix(
            (np.ones(empty.size, dtype=np.float32), (empty, profiles[types[empty]].argmax(1))), shape=X.shape
        )
        X = (X + fill).tocsr()

    adata = ad.AnnData(X)
    adata.obs_names = [f"cell_{i}" for i in range(n_cells)]
    adata.var_names = [f"gene_{j}" for j in range(n_genes)]
    adata.obs["cell_type"] = pd.Categorical(
        [f"type_{k}" for k in types], categories=[f"type_{k}" for k in range(n_clusters)]
    )
    adata.obs["sample"] = pd.Categorical(
        [f"sample_{s}" for s in samples], categories=[f"sample_{s}" for s in range(n_samples)]
    )
    adata.layers["counts"] = X.copy()
    return adata

"""The built-in demo data: simulated counts with known cell types, type-size imbalance and sample effects."""

from __future__ import annotations

import os
import threading
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


def _positive_nb(mean: np.ndarray, theta: float, rng: np.random.Generator) -> np.ndarray:
    """Draws of negative binomial counts with the given means and inverse dispersion, conditioned on being > 0."""
    out = np.empty(mean.size, dtype=np.float32)
    large = mean >= 1.0
    # expected count >= 1: P(0) <= (θ/(θ+1))^θ (0.44 at θ = 2), so redrawing the zeros ends quickly
    todo = np.flatnonzero(large)
    while todo.size:
        out[todo] = rng.poisson(rng.gamma(theta, mean[todo] / theta))
        todo = todo[out[todo] == 0]
    # expected count < 1: a redraw would mostly give 0 again, so invert the cdf instead (exact). The
    # pmf recursion is p(k+1) = p(k) (k+θ)/(k+1) · μ/(μ+θ); most draws stop at 1, so the first step
    # runs on all of them and the loop only on the few left
    small = np.flatnonzero(~large)
    m = mean[small].astype(np.float64)
    p0 = (theta / (theta + m)) ** theta
    odds = m / (m + theta)
    u = p0 + rng.random(small.size) * (1.0 - p0)
    pk = p0 * theta * odds
    cdf = p0 + pk
    # a relative slack absorbs rounding where the remaining mass is below float precision
    slack = 1 + 1e-12
    left = np.flatnonzero(u > cdf * slack)
    out[small] = 1.0
    u, cdf, pk, odds, k = u[left], cdf[left], pk[left], odds[left], 1
    while left.size:
        pk *= (k + theta) / (k + 1) * odds
        cdf += pk
        k += 1
        go = u > cdf * slack
        out[small[left[~go]]] = k
        left, u, cdf, pk, odds = left[go], u[go], cdf[go], pk[go], odds[go]
    return out


def _detection(mean: np.ndarray, theta: float, dropout_midpoint: float) -> np.ndarray:
    """Probability that an entry of expected count ``mean`` is non-zero: kept by the dropout, and > 0 under the NB."""
    kept = 1.0 / (1.0 + np.exp(-4.0 * (np.log1p(mean) - dropout_midpoint)))
    return (kept * -np.expm1(-theta * np.log1p(mean / theta))).astype(np.float32)


def _sample_counts(
    rel: np.ndarray,
    groups: np.ndarray,
    library: np.ndarray,
    dispersion: float,
    dropout_midpoint: float,
    seed: int,
    chunk_size: int,
    n_jobs: int,
) -> sp.csr_matrix:
    """Zero-inflated negative binomial counts, drawn sparsely: first which entries are non-zero, then their values.

    An entry with expected count ``μ`` is kept with probability ``σ(4 (log1p μ − midpoint))`` (the
    dropout) and is non-zero under the negative binomial with probability ``1 − (θ/(θ+μ))^θ``. Only
    the entries drawn non-zero get a value, from the negative binomial conditioned on being
    positive: the same law as drawing every entry, at a cost that follows the non-zeros. Library
    sizes take few distinct values (see :func:`simulate`), so the detection probabilities are a
    table over (group, library level) × gene, computed once.

    Each chunk of cells draws from its own generator (spawned from ``seed`` by chunk position), so the
    counts do not depend on ``n_jobs``; numpy's generators release the GIL, so chunks run in threads.
    """
    n_cells, n_genes = groups.size, rel.shape[1]
    levels, level_of_cell = np.unique(library, return_inverse=True)
    combos, combo_of_cell = np.unique(groups * levels.size + level_of_cell, return_inverse=True)
    combo_mean = (rel[combos // levels.size] * levels[combos % levels.size, None]).astype(np.float32)
    table = _detection(combo_mean, dispersion, dropout_midpoint)
    starts = range(0, n_cells, chunk_size)
    generators = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(starts))]
    local = threading.local()

    def chunk(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start = starts[i]
        stop = min(start + chunk_size, n_cells)
        rng = generators[i]
        if not hasattr(local, "prob"):
            # scratch buffers, one set per thread and reused: fresh pages cost more than the maths
            local.prob = np.empty((min(chunk_size, n_cells), n_genes), dtype=np.float32)
            local.draw, local.hit = np.empty_like(local.prob), np.empty(local.prob.shape, dtype=bool)
        n = stop - start
        prob, draw, hit_mask = local.prob[:n], local.draw[:n], local.hit[:n]
        cells = combo_of_cell[start:stop]
        np.take(table, cells, axis=0, out=prob)
        rng.random(out=draw, dtype=np.float32)
        np.less(draw, prob, out=hit_mask)
        hit = np.flatnonzero(hit_mask)
        per_cell = np.count_nonzero(hit_mask, axis=1)
        # the expected counts of the hits, gathered from the same table layout
        np.take(combo_mean, cells, axis=0, out=prob)
        mean = prob.ravel()[hit]
        cols = (hit % n_genes).astype(np.int32)
        del hit
        return per_cell, cols, _positive_nb(mean, dispersion, rng)

    if n_jobs > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n_jobs) as pool:
            parts = list(pool.map(chunk, range(len(starts))))
    else:
        parts = [chunk(i) for i in range(len(starts))]
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.concatenate([part[0] for part in parts]), out=indptr[1:])
    indices = np.concatenate([part[1] for part in parts])
    data = np.concatenate([part[2] for part in parts])
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))


def simulate(
    n_cells: int = 3000,
    n_genes: int = 2000,
    n_clusters: int = 8,
    de_fraction: float = 0.08,
    de_log_scale: float = 1.0,
    dispersion: float = 2.0,
    dropout_midpoint: float = 1.0,
    mean_library: float = 1500.0,
    proportions: Sequence[float] | None = None,
    n_samples: int = 1,
    sample_library_sd: float = 0.3,
    sample_gene_sd: float = 0.1,
    seed: int = 0,
    chunk_size: int = 20_000,
    n_jobs: int | None = None,
) -> ad.AnnData:
    """Simulate a raw-count matrix of cell types, in the spirit of Splatter.

    Gene base means are gamma distributed; each type up- or down-regulates its own random
    ``de_fraction`` of genes by log-normal factors; cells draw log-normal library sizes (rounded to
    1% steps); counts are negative binomial (gamma–Poisson) and then dropped to zero with a
    probability that falls logistically with the expected count. The defaults give about 12%
    non-zero entries at 2,000 genes, as in 10x data restricted to its highly variable genes. Only
    the non-zero entries are drawn one by one, in threads, so a million cells take well under a
    minute. With ``n_samples > 1`` every cell belongs to one of
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
        Cells simulated at once, bounding memory for large matrices. Each chunk draws from its own
        random stream, so the same ``seed`` and ``chunk_size`` give the same counts.
    n_jobs
        Threads drawing chunks in parallel (``None``: one per available core); the counts do not
        depend on it.

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
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
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

    groups = samples * n_clusters + types
    # every (sample, type) pair has one relative expression profile
    rel = (gene_shift[:, None, :] * profiles[None, :, :]).reshape(-1, n_genes)
    rel = rel / rel.sum(1, keepdims=True)
    # library sizes on a grid of 1% steps (log scale): detection probabilities become a small table
    library = np.exp(np.round(np.log(library), 2))
    X = _sample_counts(rel, groups, library, dispersion, dropout_midpoint, seed, chunk_size, n_jobs)
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
    adata.obs["cell_type"] = pd.Categorical.from_codes(types, categories=[f"type_{k}" for k in range(n_clusters)])
    adata.obs["sample"] = pd.Categorical.from_codes(samples, categories=[f"sample_{s}" for s in range(n_samples)])
    adata.layers["counts"] = X.copy()
    return adata

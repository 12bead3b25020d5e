"""SCDSEC's cell partition at scale: how its k-means is started, against time and group quality.

On simulated counts (``scdmac.data.simulate``, 10 types, 2,000 genes) taken to 50 principal
components of 1,000 selected genes as ``setup_anndata`` does, it times
:func:`~scdmac.data.partition_cells` (random starts among a sample of cells) and the same sampled fit
started by k-means++ (the code before 2026-12-04), then scores both partitions: the share of 15-NN
edges (approximate search) that stay inside a group, which is what subgraph minibatches keep, and the
group sizes. The components are cached in ``--cache`` so a rerun skips simulation and PCA.

Usage::

    python benchmarks/partition.py --cells 1000000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def components(n_cells: int, cache: Path | None) -> np.ndarray:
    """50 principal components of the selected genes of ``n_cells`` simulated cells."""
    import scdmac
    from scdmac.data._preprocess import pca, selected_log_expression

    if cache is not None and cache.exists():
        return np.load(cache)
    adata = scdmac.data.simulate(n_cells=n_cells, n_genes=2000, n_clusters=10, seed=0)
    _, log_selected = selected_log_expression(adata.X, 1000, int(np.ceil(0.01 * n_cells)), random_state=0)
    del adata
    pcs = pca(log_selected, 50, 0)
    if cache is not None:
        np.save(cache, pcs)
    return pcs


def kmeanspp_partition(X: np.ndarray, partition_size: int, random_state: int = 0) -> np.ndarray:
    """The sampled partition as it was before: the same sample and iterations, k-means++ starts."""
    from sklearn.cluster import KMeans

    from scdmac.data._graph import PARTITION_FIT_CELLS_PER_GROUP

    n_groups = max(1, int(round(X.shape[0] / partition_size)))
    rows = np.random.default_rng(random_state).choice(
        X.shape[0], n_groups * PARTITION_FIT_CELLS_PER_GROUP, replace=False
    )
    kmeans = KMeans(n_groups, n_init=1, max_iter=20, random_state=random_state).fit(X[np.sort(rows)])
    return np.unique(kmeans.predict(X), return_inverse=True)[1]


def main() -> None:
    from scdmac.data import knn, partition_cells

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--partition-size", type=int, default=128)
    parser.add_argument("--cache", type=Path, default=None, help="where to keep the components (.npy)")
    args = parser.parse_args()
    pcs = components(args.cells, args.cache)
    results = {}
    for name, fn in (("random starts (now)", partition_cells), ("k-means++ starts (before)", kmeanspp_partition)):
        t0 = time.perf_counter()
        groups = fn(pcs, args.partition_size, random_state=0)
        results[name] = (time.perf_counter() - t0, groups)
    neighbours, _ = knn(pcs, 15, method="approximate", random_state=0)
    print("| k-means start | time (s) | groups | edges inside a group | median size | largest |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (seconds, groups) in results.items():
        sizes = np.bincount(groups)
        inside = float((groups[neighbours] == groups[:, None]).mean())
        print(f"| {name} | {seconds:.1f} | {len(sizes)} | {inside:.3f} | {np.median(sizes):.0f} | {sizes.max()} |")


if __name__ == "__main__":
    main()

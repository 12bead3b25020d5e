"""Accuracy on real annotated data (``../shared/data``), against PCA+KMeans computed in the same test."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import SHARED_DATA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real datasets not found at {SHARED_DATA}"),
]


def _pca_kmeans(adata, k: int, seed: int) -> np.ndarray:
    import scanpy as sc
    from sklearn.cluster import KMeans

    b = adata.copy()
    sc.pp.filter_genes(b, min_cells=1)
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    if b.n_vars > 2000:
        sc.pp.highly_variable_genes(b, n_top_genes=2000)
        b = b[:, b.var.highly_variable].copy()
    sc.pp.scale(b, max_value=10)
    sc.tl.pca(b, n_comps=50, random_state=seed)
    return KMeans(k, n_init=10, random_state=seed).fit_predict(b.obsm["X_pca"])


@pytest.mark.parametrize("name", ["pbmc_10x_4k_top2000", "paul15_myeloid", "mouse_bladder_han_top2000"])
def test_scdmac_beats_pca_kmeans(name):
    import anndata as ad
    import scvi
    from sklearn.metrics import adjusted_rand_score

    from scdmac.model import SCDMAC

    path = SHARED_DATA / f"{name}.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not found")
    adata = ad.read_h5ad(path)
    k = adata.obs["cell_type"].nunique()
    baseline = adjusted_rand_score(adata.obs["cell_type"], _pca_kmeans(adata, k, seed=0))
    scvi.settings.seed = 0
    SCDMAC.setup_anndata(adata)
    model = SCDMAC(adata, n_clusters=k)
    model.train(enable_progress_bar=False)
    ours = adjusted_rand_score(adata.obs["cell_type"], adata.obs["scdmac_cluster"])
    print(f"{name}: SCDMAC ARI {ours:.3f}, PCA+KMeans ARI {baseline:.3f}")
    assert ours >= baseline - 0.02

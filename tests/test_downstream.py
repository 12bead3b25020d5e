"""The documented scanpy workflow after our models, above the size where scanpy switches to pynndescent."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_scanpy_downstream_above_10k_cells():
    """`sc.pp.neighbors(use_rep=...)` after our model on >10k cells (pynndescent path) must work."""
    import scanpy as sc

    import scdmac

    adata = scdmac.data.simulate(n_cells=12_000, n_genes=500, n_clusters=5, seed=0)
    scdmac.model.SCDMAC.setup_anndata(adata, layer="counts")
    model = scdmac.model.SCDMAC(adata, n_clusters=5)
    model.train(max_epochs=1, enable_progress_bar=False)
    sc.pp.neighbors(adata, use_rep="X_scdmac")
    sc.tl.umap(adata)
    assert adata.obsm["X_umap"].shape == (12_000, 2)

"""The normalisation target: what setup and the networks scale each cell to before ``log1p``."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch

import scdmac
from scdmac.data import library_size, log_normalize, normalization_target
from scdmac.model import SCDMAC, SCDSEC

from .conftest import FAST_TRAIN


@pytest.fixture(scope="module")
def small():
    return scdmac.data.simulate(n_cells=240, n_genes=150, n_clusters=3, seed=3)


def test_the_target_is_the_median_library_size_or_the_number_given(small):
    counts = small.layers["counts"]
    median = float(np.median(library_size(counts)))
    assert normalization_target(counts, None) == pytest.approx(median)
    assert normalization_target(counts, 1e4) == 1e4
    for bad in (0, -5.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="target_sum"):
            normalization_target(counts, bad)


@pytest.mark.parametrize("model_cls", [SCDMAC, SCDSEC], ids=["SCDMAC", "SCDSEC"])
def test_a_bad_target_is_refused_before_anything_is_added(model_cls, small):
    adata = small.copy()
    keys = set(adata.obsm) | set(adata.obs) | set(adata.uns)
    with pytest.raises(ValueError, match="target_sum must be a positive number"):
        model_cls.setup_anndata(adata, layer="counts", target_sum=-1.0)
    assert set(adata.obsm) | set(adata.obs) | set(adata.uns) == keys


@pytest.mark.parametrize("model_cls", [SCDMAC, SCDSEC], ids=["SCDMAC", "SCDSEC"])
@pytest.mark.parametrize("target_sum", [None, 1e4], ids=["median", "fixed"])
def test_the_network_reads_the_expression_setup_normalised(model_cls, target_sum, small):
    adata = small.copy()
    model_cls.setup_anndata(adata, layer="counts", target_sum=target_sum)
    model = model_cls(adata, n_clusters=3)
    counts = adata.layers["counts"]
    expected_target = float(np.median(library_size(counts))) if target_sum is None else 1e4
    assert model.module.normalization_target() == pytest.approx(expected_target)
    genes = model.module.gene_indices.numpy()
    x = torch.from_numpy(counts[:20].toarray().astype(np.float32))
    _, _, x_log = model.module.split_counts(x)
    expected = log_normalize(counts[:20], expected_target)[:, genes].toarray()
    np.testing.assert_allclose(x_log.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_loaded_model_keeps_its_training_datas_median(small, tmp_path):
    adata = small.copy()
    SCDMAC.setup_anndata(adata, layer="counts", target_sum=None)
    scvi.settings.seed = 0
    model = SCDMAC(adata, n_clusters=3)
    model.train(**FAST_TRAIN)
    target = model.module.normalization_target()
    model.save(tmp_path / "m", overwrite=True)
    loaded = SCDMAC.load(tmp_path / "m", adata=adata)
    assert loaded.module.normalization_target() == pytest.approx(target)
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-5)
    assert loaded.adata_manager.registry["setup_args"]["target_sum"] is None

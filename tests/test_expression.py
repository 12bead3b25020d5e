"""Denoised expression and differential expression, checked against scvi-tools' conventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi

import scdmac
from scdmac.model import SCDMAC, SCDSEC

from .conftest import FAST_TRAIN


@pytest.fixture(scope="module")
def two_samples():
    return scdmac.data.simulate(n_cells=300, n_genes=200, n_clusters=3, de_fraction=0.15, n_samples=2, seed=0)


@pytest.fixture(scope="module", params=[SCDMAC, SCDSEC], ids=["SCDMAC", "SCDSEC"])
def model(request, two_samples):
    adata = two_samples.copy()
    request.param.setup_anndata(adata, layer="counts", batch_key="sample")
    scvi.settings.seed = 0
    model = request.param(adata, n_clusters=3)
    model.train(**FAST_TRAIN)
    return model


def test_normalized_expression_follows_scvi_conventions(model):
    genes = model.adata.var_names[model.adata.var[model.hvg_key()].to_numpy()]
    expr = model.get_normalized_expression()
    assert isinstance(expr, pd.DataFrame)
    assert list(expr.index) == list(model.adata.obs_names) and list(expr.columns) == list(genes)
    np.testing.assert_allclose(expr.sum(1), 1.0, rtol=1e-4)
    assert (expr.to_numpy() > 0).all()
    scaled = model.get_normalized_expression(library_size=1e4, indices=[0, 5, 7], return_numpy=True)
    assert isinstance(scaled, np.ndarray) and scaled.shape == (3, len(genes))
    np.testing.assert_allclose(scaled, expr.to_numpy()[[0, 5, 7]] * 1e4, rtol=1e-4)
    latent = model.get_normalized_expression(library_size="latent", indices=[0, 1])
    libraries = np.asarray(model.adata.layers["counts"][[0, 1]].sum(1)).ravel()
    np.testing.assert_allclose(latent.sum(1), libraries, rtol=1e-4)
    subset = model.get_normalized_expression(gene_list=list(genes[:4]))
    assert list(subset.columns) == list(genes[:4])
    samples = model.get_normalized_expression(n_samples=3, return_mean=False)
    assert samples.shape == (3, model.adata.n_obs, len(genes))
    drawn = model.get_normalized_expression(n_samples_overall=50)
    assert drawn.shape == (50, len(genes))


def test_transform_batch_decodes_for_a_sample(model):
    as_first = model.get_normalized_expression(transform_batch="sample_0", return_numpy=True)
    as_second = model.get_normalized_expression(transform_batch="sample_1", return_numpy=True)
    both = model.get_normalized_expression(transform_batch=["sample_0", "sample_1"], return_numpy=True)
    assert not np.allclose(as_first, as_second)
    np.testing.assert_allclose(both, (as_first + as_second) / 2, rtol=1e-4)
    with pytest.raises(ValueError, match="not one of the training samples"):
        model.get_normalized_expression(transform_batch="donor_9")


def test_genes_that_are_not_modelled_are_named(model):
    unmodelled = model.adata.var_names[~model.adata.var[model.hvg_key()].to_numpy()]
    if len(unmodelled) == 0:
        pytest.skip("every gene is modelled here")
    with pytest.raises(ValueError, match="not modelled by this model"):
        model.get_normalized_expression(gene_list=[unmodelled[0]])


def test_differential_expression_on_the_clusters(model):
    de = model.differential_expression(groupby=model.cluster_key, silent=True)
    genes = model.adata.var_names[model.adata.var[model.hvg_key()].to_numpy()]
    groups = model.adata.obs[model.cluster_key].cat.categories
    populated = [g for g in groups if (model.adata.obs[model.cluster_key] == g).sum() > 0]
    assert set(de["group1"]) == set(populated)
    assert set(de.index) == set(genes)
    assert {"proba_de", "bayes_factor", "lfc_mean", "raw_mean1", "non_zeros_proportion1"} <= set(de.columns)
    assert de["proba_de"].between(0, 1).all()
    one = model.differential_expression(
        groupby=model.cluster_key, group1=populated[0], group2=populated[1], silent=True
    )
    assert len(one) == len(genes) and (one["comparison"] == f"{populated[0]} vs {populated[1]}").all()


def test_expression_of_new_cells(model, two_samples):
    query = two_samples[:40].copy()
    expr = model.get_normalized_expression(query)
    assert expr.shape == (40, int(model.adata.var[model.hvg_key()].sum()))
    assert list(expr.index) == list(query.obs_names)


def test_view_anndata_setup_shows_the_fields(model, capsys):
    model.view_anndata_setup()
    printed = capsys.readouterr().out
    assert "batch" in printed and "sample" in printed

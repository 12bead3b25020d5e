"""Several samples (``batch_key``) and new cells mapped onto a trained model (query mapping).

The data: 3 samples with strong per-gene shifts (log-normal, sd 0.5) and library-size factors,
5 types spread evenly over the samples, so the right clusters are the types and not the samples.
A model is trained on half of the cells and maps the other half.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from sklearn.metrics import adjusted_rand_score

import scdmac
from scdmac.data import balanced_knn, sample_log_shift
from scdmac.model import SCDMAC, SCDSEC

SAMPLES = dict(n_cells=2000, n_genes=500, n_clusters=5, n_samples=3, sample_gene_sd=0.5, seed=1)


@pytest.fixture(scope="module")
def halves():
    adata = scdmac.data.simulate(**SAMPLES)
    order = np.random.default_rng(0).permutation(adata.n_obs)
    return adata[np.sort(order[:1000])].copy(), adata[np.sort(order[1000:])].copy()


def _train(cls, reference):
    adata = reference.copy()
    cls.setup_anndata(adata, layer="counts", batch_key="sample")
    scvi.settings.seed = 0
    model = cls(adata, n_clusters=5)
    weights = None
    model.train(enable_progress_bar=False)
    weights = {k: v.clone() for k, v in model.module.state_dict().items()}
    return model, weights


@pytest.fixture(scope="module", params=[SCDMAC, SCDSEC], ids=["SCDMAC", "SCDSEC"])
def mapped(request, halves):
    """A model trained with batch_key on the first half, and its weights right after training."""
    return _train(request.param, halves[0])


# ---- registration --------------------------------------------------------------------------------------
def test_batch_key_is_registered_with_scvi_fields(halves):
    adata = halves[0].copy()
    SCDMAC.setup_anndata(adata, layer="counts", batch_key="sample", categorical_covariate_keys=["cell_type"])
    model = SCDMAC(adata, n_clusters=5)
    assert model.summary_stats.n_batch == 3
    assert model.module.n_cat_list == [3, 5]
    assert model.module.sample_shift.shape == (3, len(model.module.gene_indices))
    model.view_anndata_setup()  # prints the fields, sample included
    assert set(model.adata_manager.data_registry) >= {"batch", "extra_categorical_covs"}


def test_without_batch_key_nothing_is_added(halves):
    adata = halves[0].copy()
    SCDSEC.setup_anndata(adata, layer="counts")
    model = SCDSEC(adata, n_clusters=5)
    assert "batch" not in model.adata_manager.data_registry
    assert model.module.n_cat_list == [] and model.module.sample_shift is None
    assert "_scvi_batch" not in adata.obs


@pytest.mark.parametrize("cls", [SCDMAC, SCDSEC])
def test_bad_sample_columns_are_named_before_training(halves, cls):
    adata = halves[0].copy()
    with pytest.raises(KeyError, match="'donor' is not a column of adata.obs"):
        cls.setup_anndata(adata, layer="counts", batch_key="donor")
    adata.obs["with_gap"] = adata.obs["sample"].astype(object)
    adata.obs.iloc[3, adata.obs.columns.get_loc("with_gap")] = np.nan
    with pytest.raises(ValueError, match=r"adata.obs\['with_gap'\] has 1 missing value"):
        cls.setup_anndata(adata, layer="counts", batch_key="with_gap")
    with pytest.raises(ValueError, match="named once"):
        cls.setup_anndata(adata, layer="counts", batch_key="sample", categorical_covariate_keys=["sample"])


# ---- the pieces ----------------------------------------------------------------------------------------
def test_balanced_knn_takes_neighbours_from_every_sample():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], [50, 30, 20])
    # the samples lie far apart: a plain kNN graph would never cross them
    X = rng.normal(size=(100, 5)) + groups[:, None] * 100.0
    idx, dist = balanced_knn(X, groups, n_neighbors=6)
    assert idx.shape == (100, 6)
    assert (idx != np.arange(100)[:, None]).all()
    for cell in range(100):
        assert np.bincount(groups[idx[cell]], minlength=3).tolist() == [2, 2, 2]
    assert (dist >= 0).all()


def test_sample_shift_equalises_sample_means():
    adata = scdmac.data.simulate(n_cells=600, n_genes=100, n_clusters=2, n_samples=2, sample_gene_sd=0.5, seed=3)
    codes = adata.obs["sample"].cat.codes.to_numpy()
    genes = np.arange(100)
    shift = sample_log_shift(adata.X, genes, codes, 2)
    x_log = scdmac.data.log_normalize(adata.X).toarray()
    centred = x_log - shift[codes]
    means = np.stack([centred[codes == s].mean(0) for s in range(2)])
    np.testing.assert_allclose(means[0], means[1], atol=1e-4)
    # the weighted mean of the shifts is zero: the overall mean profile is kept
    np.testing.assert_allclose(np.bincount(codes) @ shift / len(codes), 0.0, atol=1e-4)


# ---- accuracy with samples -----------------------------------------------------------------------------
def test_clusters_follow_types_not_samples(mapped):
    model, _ = mapped
    labels = model.adata.obs[model.cluster_key]
    assert adjusted_rand_score(model.adata.obs["cell_type"], labels) >= 0.9
    assert adjusted_rand_score(model.adata.obs["sample"], labels) <= 0.1


# ---- query mapping -------------------------------------------------------------------------------------
def test_query_is_mapped_and_the_model_is_unchanged(mapped, halves):
    model, weights = mapped
    query = halves[1].copy()
    before = query.copy()
    labels = model.predict(query)
    assert labels.shape == (query.n_obs,)
    assert adjusted_rand_score(query.obs["cell_type"], labels) >= 0.9
    soft = model.predict(query, soft=True)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-5)
    z = model.get_latent_representation(query)
    assert z.shape == (query.n_obs, model.adata.obsm[model.latent_key].shape[1])
    after = model.module.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    # the query gets scvi-tools' registry entries and nothing else
    assert set(query.obs.columns) - set(before.obs.columns) == {"_scvi_batch"}
    assert set(query.uns) - set(before.uns) == {"_scvi_uuid", "_scvi_manager_uuid"}
    assert (query.layers["counts"] != before.layers["counts"]).nnz == 0


def test_training_cells_as_a_query_get_their_labels_back(mapped):
    model, _ = mapped
    trained = model.adata.obs[model.cluster_key].astype(int).to_numpy()
    cells = model.adata.copy()
    together = model.predict(cells)
    in_groups = np.concatenate([model.predict(cells[i : i + 37].copy()) for i in range(0, cells.n_obs, 37)])
    assert (together == trained).mean() >= 0.99
    # a cell's result does not depend on the other query cells it comes with
    np.testing.assert_array_equal(together, in_groups)


def test_query_genes_are_matched_by_name(mapped, halves):
    model, _ = mapped
    query = halves[1].copy()
    expected = model.predict(query)
    shuffled = query[:, np.random.default_rng(2).permutation(query.n_vars)].copy()
    np.testing.assert_array_equal(model.predict(shuffled), expected)
    # results are written into the user's AnnData even when the model read a reordered copy
    model.write_results(shuffled)
    np.testing.assert_array_equal(shuffled.obs[model.cluster_key].astype(int), expected)
    with pytest.raises(ValueError, match=r"3 of the 500 genes .* are not in the query .*prepare_query_anndata"):
        model.predict(query[:, 3:].copy())
    padded = type(model).prepare_query_anndata(query[:, 3:].copy(), model, inplace=False)
    assert list(padded.var_names) == list(model.adata.var_names)
    assert model.predict(padded).shape == (query.n_obs,)


def test_a_query_changed_in_place_is_read_anew(mapped, halves):
    # the reordered copy a query is read through must follow the query's own counts and samples
    model, _ = mapped
    order = np.random.default_rng(3).permutation(halves[1].n_vars)
    query = halves[1][:, order].copy()
    first = model.get_latent_representation(query)
    other = halves[0][: query.n_obs, order].copy()
    query.layers["counts"] = other.layers["counts"].copy()
    replaced = model.get_latent_representation(query)
    assert not np.allclose(replaced, first)
    query.obs["sample"] = other.obs["sample"].to_numpy()
    np.testing.assert_array_equal(model.get_latent_representation(query), model.get_latent_representation(other))


def test_query_samples_must_be_training_samples(mapped, halves):
    model, _ = mapped
    query = halves[1].copy()
    query.obs["sample"] = pd.Categorical(["new_donor"] * query.n_obs)
    with pytest.raises(ValueError, match=r"samples the .* model was not trained on \(\['new_donor'\]\).*together"):
        model.predict(query)
    del query.obs["sample"]
    with pytest.raises(KeyError, match="batch_key='sample'"):
        model.predict(query)


def test_query_must_hold_counts(mapped, halves):
    model, _ = mapped
    query = halves[1].copy()
    query.layers["counts"] = query.layers["counts"] * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        model.predict(query)


def test_tl_one_liner_takes_batch_key(halves):
    adata = halves[0].copy()
    before = set(adata.obs.columns)
    scdmac.tl.scdmac(
        adata, 5, layer="counts", batch_key="sample", train_kwargs={"max_epochs": 2, "enable_progress_bar": False}
    )
    assert set(adata.obs.columns) - before == {"scdmac_cluster"}
    assert adata.uns["scdmac"]["params"]["setup_kwargs"] == {"batch_key": "sample"}
    with pytest.raises(KeyError, match="'donor' is not a column of adata.obs"):
        scdmac.tl.scdsec(adata, 5, layer="counts", batch_key="donor")


@pytest.mark.parametrize("cls", [SCDMAC, SCDSEC])
def test_model_with_samples_saves_and_loads(cls, tmp_path):
    adata = scdmac.data.simulate(n_cells=300, n_genes=200, n_clusters=3, n_samples=2, seed=0)
    query = adata[:50].copy()
    cls.setup_anndata(adata, layer="counts", batch_key="sample", categorical_covariate_keys=["cell_type"])
    scvi.settings.seed = 0
    model = cls(adata, n_clusters=3)
    model.train(max_epochs=2, enable_progress_bar=False)
    model.save(tmp_path / "model", save_anndata=True)
    loaded = cls.load(tmp_path / "model")
    assert loaded.module.n_cat_list == [2, 3]
    np.testing.assert_array_equal(loaded.predict(), model.predict())
    np.testing.assert_array_equal(loaded.predict(query), model.predict(query))


def test_scdsec_builds_its_reference_once(mapped, halves):
    model, _ = mapped
    if not isinstance(model, SCDSEC):
        pytest.skip("only SCDSEC places query cells on its training graph")
    model.predict(halves[1][:20].copy())
    reference = model._reference()
    index = reference.index
    assert index is not None
    model.predict(halves[1][20:40].copy())
    assert model._reference() is reference and reference.index is index

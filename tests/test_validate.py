from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import scdmac
from scdmac.model import SCDMAC, SCDSEC


@pytest.fixture(params=[SCDMAC, SCDSEC], ids=["scdmac", "scdsec"])
def model_cls(request):
    """Both models share the input checks: every test runs against each."""
    return request.param


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda X: X.data.__setitem__(0, np.nan), "NaN or infinite"),
        (lambda X: X.data.__setitem__(0, np.inf), "NaN or infinite"),
        (lambda X: X.data.__setitem__(0, -3.0), "negative"),
        (lambda X: X.data.__setitem__(slice(None), X.data * 0.37), "non-integer"),
    ],
)
def test_bad_values_raise_clear_errors(small, mutate, match, model_cls):
    mutate(small.X)
    with pytest.raises(ValueError, match=match):
        model_cls.setup_anndata(small)


def test_log_normalised_data_is_refused(small, model_cls):
    import scanpy as sc

    sc.pp.normalize_total(small)
    sc.pp.log1p(small)
    with pytest.raises(ValueError, match="raw integer counts"):
        model_cls.setup_anndata(small)


def test_empty_cells_are_named(small, model_cls):
    X = small.X.tolil()
    X[5, :] = 0
    small.X = X.tocsr()
    with pytest.raises(ValueError, match=r"1 cells have no counts.*filter_cells"):
        model_cls.setup_anndata(small)


def test_all_zero_genes_are_not_used(small):
    X = small.X.tolil()
    X[:, :10] = 0
    small.X = X.tocsr()
    SCDMAC.setup_anndata(small, n_top_genes=500)
    assert not small.var["scdmac_hvg"].iloc[:10].any()
    detected = np.asarray((small.X > 0).sum(0)).ravel() > 0
    assert (small.var["scdmac_hvg"].to_numpy() == detected).all()


def test_missing_layer(small, model_cls):
    with pytest.raises(KeyError, match="Layer 'raw' not found.*available: 'counts'"):
        model_cls.setup_anndata(small, layer="raw")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_latent": 0}, "n_latent must be an integer of at least 1"),
        ({"dropout_rate": 1.0}, r"dropout_rate is a share and must lie in \[0, 1\)"),
    ],
)
def test_bad_network_arguments_are_refused_before_training(small, model_cls, kwargs, match):
    model_cls.setup_anndata(small)
    with pytest.raises(ValueError, match=match):
        model_cls(small, n_clusters=3, **kwargs)


def test_model_specific_network_arguments_are_checked(small):
    SCDMAC.setup_anndata(small)
    with pytest.raises(ValueError, match="mask_ratio is a share"):
        SCDMAC(small, n_clusters=3, mask_ratio=1.5)
    SCDSEC.setup_anndata(small)
    with pytest.raises(ValueError, match="hidden_widths must be a non-empty sequence"):
        SCDSEC(small, n_clusters=3, hidden_widths=[])
    with pytest.raises(ValueError, match="each of hidden_widths must be an integer of at least 1"):
        SCDSEC(small, n_clusters=3, hidden_widths=(64, 0))


def test_a_misspelt_training_argument_is_named_before_any_work(small, model_cls, monkeypatch):
    model_cls.setup_anndata(small)
    model = model_cls(small, n_clusters=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_epoch'.*Did you mean 'max_epochs'"):
        model.train(max_epoch=2)
    assert not model.is_trained_
    # the one-liner refuses it before setup runs
    monkeypatch.setattr(model_cls, "setup_anndata", lambda *a, **k: pytest.fail("setup ran"))
    one_liner = scdmac.tl.scdmac if model_cls is SCDMAC else scdmac.tl.scdsec
    with pytest.raises(TypeError, match="'max_epoch'"):
        one_liner(small, n_clusters=3, train_kwargs={"max_epoch": 2})


def test_samples_too_small_to_centre_are_named(small, model_cls):
    # centring a one-cell sample on its own mean leaves it nothing of its own
    small.obs["donor"] = ["big"] * 297 + ["tiny", "tiny", "single"]
    with pytest.warns(UserWarning, match=r"2 sample\(s\) of adata.obs\['donor'\].*'tiny' \(2\), 'single' \(1\)"):
        model_cls.setup_anndata(small, batch_key="donor")
    small.obs["donor"] = ["a"] * 150 + ["b"] * 150
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model_cls.setup_anndata(small, batch_key="donor")


@pytest.mark.parametrize("k", [1, 0, 300, 1000])
def test_bad_n_clusters(small, k, model_cls):
    model_cls.setup_anndata(small)
    with pytest.raises(ValueError, match="n_clusters"):
        model_cls(small, n_clusters=k)


def test_n_clusters_type(small, model_cls):
    model_cls.setup_anndata(small)
    with pytest.raises(TypeError, match="integer or None"):
        model_cls(small, n_clusters=2.5)


def test_too_many_neighbours(small, model_cls):
    with pytest.raises(ValueError, match="not smaller than the number of cells"):
        model_cls.setup_anndata(small[:10].copy(), n_neighbors=15)


def test_bad_cluster_init(small, model_cls):
    model_cls.setup_anndata(small)
    with pytest.raises(ValueError, match="cluster_init must be 'kmeans' or 'leiden'"):
        model_cls(small, n_clusters=3).train(cluster_init="spectral")
    assert not small.obsm.keys() & {model_cls._prefix + "_soft", "X_" + model_cls._prefix}


def test_dense_input_accepted(small, model_cls):
    small.X = small.X.toarray()
    model_cls.setup_anndata(small)
    assert small.obsm[model_cls.neighbors_key()].shape == (300, 15)


def test_check_counts_direct():
    scdmac.data.check_counts(sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]])))
    with pytest.raises(ValueError, match="no counts"):
        scdmac.data.check_counts(np.array([[1.0, 0.0], [0.0, 0.0]]))

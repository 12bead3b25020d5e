from __future__ import annotations

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

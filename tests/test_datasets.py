"""Datasets fetched by URL into a cache: served here from a local HTTP server, no internet needed."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import sparse

import scdmac


@pytest.fixture
def served(http_folder):
    """A small h5ad with source-style labels (``paul15_clusters``, dense X), served over HTTP."""
    base, root, requested = http_folder
    adata = scdmac.data.simulate(n_cells=60, n_genes=40, n_clusters=3, seed=0)
    adata.obs["paul15_clusters"] = adata.obs.pop("cell_type").astype(str)
    adata.X = adata.layers.pop("counts").toarray()
    adata.write_h5ad(root / "cells.h5ad")
    return base, root, adata, requested


def test_read_downloads_once_then_reads_the_cache(served, tmp_path):
    base, _, original, requested = served
    cache = tmp_path / "cache"
    first = scdmac.data.read(f"{base}/cells.h5ad", cache_dir=cache)
    second = scdmac.data.read(f"{base}/cells.h5ad", cache_dir=cache)
    assert requested == ["/cells.h5ad"]  # the second read came from the cache
    assert len(list(cache.iterdir())) == 1
    for adata in (first, second):
        assert adata.shape == original.shape
        assert sparse.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
        np.testing.assert_array_equal(adata.X.toarray(), original.X)
        assert adata.obs["cell_type"].dtype == "category"
        assert (adata.obs["cell_type"].astype(str) == original.obs["paul15_clusters"]).all()


def test_cache_folder_from_the_environment(served, tmp_path, monkeypatch):
    base, _, _, _ = served
    monkeypatch.setenv(scdmac.data.DATA_DIR_VARIABLE, str(tmp_path / "env_cache"))
    path = scdmac.data.fetch(f"{base}/cells.h5ad")
    assert path.parent == tmp_path / "env_cache" and path.is_file()


def test_hash_is_checked_and_a_bad_download_is_not_kept(served, tmp_path):
    base, root, _, _ = served
    digest = hashlib.sha256((root / "cells.h5ad").read_bytes()).hexdigest()
    good = scdmac.data.fetch(f"{base}/cells.h5ad", sha256=digest, cache_dir=tmp_path / "good")
    assert good.is_file()
    bad_cache = tmp_path / "bad"
    with pytest.raises(ValueError, match="(?i)hash"):
        scdmac.data.fetch(f"{base}/cells.h5ad", sha256="0" * 64, cache_dir=bad_cache)
    assert not [p for p in bad_cache.iterdir() if p.is_file()]


def test_local_paths_and_bad_sources(served, tmp_path):
    _, root, _, _ = served
    assert scdmac.data.fetch(root / "cells.h5ad") == root / "cells.h5ad"
    with pytest.raises(FileNotFoundError, match="No dataset file"):
        scdmac.data.fetch(tmp_path / "missing.h5ad")
    with pytest.raises(ValueError, match="only http"):
        scdmac.data.fetch("s3://bucket/cells.h5ad", cache_dir=tmp_path)


def test_paul15_reads_its_url_through_the_cache(served, tmp_path, monkeypatch):
    from scdmac.data import _datasets

    base, _, original, requested = served
    monkeypatch.setattr(_datasets, "PAUL15_URL", f"{base}/cells.h5ad")  # stands in for the public file
    adata = scdmac.data.paul15(cache_dir=tmp_path / "cache")
    assert adata.shape == original.shape and "cell_type" in adata.obs
    assert requested == ["/cells.h5ad"]

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import scdmac

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="session")
def _small():
    return scdmac.data.simulate(n_cells=300, n_genes=200, n_clusters=3, de_fraction=0.15, seed=0)


@pytest.fixture
def small(_small):
    """300 cells × 200 genes, 3 well separated types (a fresh copy per test)."""
    return _small.copy()


FAST_TRAIN = {"max_epochs": 2, "enable_progress_bar": False, "batch_size": 128}


@pytest.fixture(scope="session")
def _trained(_small):
    import scvi

    adata = _small.copy()
    scdmac.model.SCDMAC.setup_anndata(adata, layer="counts")
    scvi.settings.seed = 0
    model = scdmac.model.SCDMAC(adata, n_clusters=3)
    model.train(**FAST_TRAIN)
    return model


@pytest.fixture
def trained(_trained):
    """An SCDMAC model trained briefly on ``small`` (shared: do not train it further)."""
    return _trained

from __future__ import annotations

import functools
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest

import scdmac

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def _small():
    return scdmac.data.simulate(n_cells=300, n_genes=200, n_clusters=3, de_fraction=0.15, seed=0)


@pytest.fixture
def small(_small):
    """300 cells × 200 genes, 3 well separated types (a fresh copy per test)."""
    return _small.copy()


class _RecordingHandler(SimpleHTTPRequestHandler):
    """Serves a folder and records each requested path, so a test can tell a download from a cache hit."""

    requested: list[str]

    def do_GET(self):  # noqa: N802 (the http.server name)
        self.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server over a fresh folder: yields (base URL, folder, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requested: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"requested": requested})
    server = HTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", root, requested
    server.shutdown()
    server.server_close()


FAST_TRAIN = {"max_epochs": 2, "enable_progress_bar": False, "batch_size": 128}


def assert_results_written(adata, prefix: str, n_latent: int, n_clusters: int, extra_obsm: set | None = None) -> None:
    """The documented output keys of a trained model: embedding, categorical string labels, soft rows summing to 1."""
    import numpy as np
    import pandas as pd
    from numpy.testing import assert_allclose

    z = adata.obsm[f"X_{prefix}"]
    assert z.shape == (adata.n_obs, n_latent) and z.dtype == np.float32
    labels = adata.obs[f"{prefix}_cluster"]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert all(isinstance(c, str) for c in labels.cat.categories)
    soft = adata.obsm[f"{prefix}_soft"]
    assert soft.shape == (adata.n_obs, n_clusters)
    assert_allclose(soft.sum(1), 1.0, atol=1e-5)
    extra_obsm = {f"_{prefix}_neighbors"} if extra_obsm is None else extra_obsm
    assert set(adata.obsm) == {f"X_{prefix}", f"{prefix}_soft"} | extra_obsm


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

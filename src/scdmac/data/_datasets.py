"""Public datasets fetched by URL into a local cache, so tutorials and examples run from a clone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData

DATA_DIR_VARIABLE = "SCDMAC_DATA_DIR"
"""Environment variable that moves the download cache (default: the user cache folder of the platform)."""

PAUL15_URL = (
    "https://raw.githubusercontent.com/eleozzr/desc/cf836c74b02ee92ad8312e006497da9ab51c1cfe/"
    "desc/original/paul15_cluster.h5ad"
)
"""Paul et al. 2015 (MARS-seq mouse myeloid progenitors, GEO GSE72857) as the DESC repository distributes it,
pinned to one commit."""

# Names under which published label columns come; the first one present becomes obs["cell_type"].
_LABEL_COLUMNS = ("cell_type", "paul15_clusters")


def data_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder that holds downloaded datasets.

    Parameters
    ----------
    cache_dir
        Explicit folder; otherwise ``$SCDMAC_DATA_DIR`` when set, otherwise the platform's user cache folder
        (e.g. ``~/.cache/scdmac`` on Linux).

    Returns
    -------
    :class:`~pathlib.Path`
        The folder (not created here: :func:`fetch` creates it before a download).
    """
    import pooch

    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(DATA_DIR_VARIABLE):
        return Path(os.environ[DATA_DIR_VARIABLE])
    return Path(pooch.os_cache("scdmac"))


def fetch(source: str | os.PathLike, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Local path of a dataset, downloading it once into the cache when ``source`` is a URL.

    Downloads go through :func:`pooch.retrieve`, which writes to a temporary file and moves it into place only
    when complete, so an interrupted download never leaves a half-written file in the cache.

    Parameters
    ----------
    source
        ``http(s)://`` or ``ftp://`` URL, or a local path (returned as it is, after checking it exists).
    sha256
        Expected SHA-256 of the file; a download that does not match raises and is deleted. ``None`` skips the
        check (pooch logs the hash it found, to pin it later).
    cache_dir
        Where downloads are kept (see :func:`data_dir`).

    Returns
    -------
    :class:`~pathlib.Path`
        Path of the file on this machine.
    """
    text = os.fspath(source)
    if "://" not in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No dataset file at {path}: give an existing .h5ad path or an http(s) URL.")
        return path
    if not text.startswith(("http://", "https://", "ftp://")):
        raise ValueError(f"Cannot download {text!r}: only http://, https:// and ftp:// URLs are supported.")
    import pooch

    known_hash = None if sha256 is None else f"sha256:{sha256}"
    folder = data_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(pooch.retrieve(text, known_hash=known_hash, path=folder, progressbar=False))


def read(
    source: str | os.PathLike, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None
) -> AnnData:
    """Read an ``.h5ad`` file of raw counts from a path or a URL (downloaded once, then read from the cache).

    A published label column (``cell_type``, or a known source-specific name such as ``paul15_clusters``) is
    exposed as a categorical ``obs["cell_type"]``; ``X`` is returned as a CSR matrix of float32 counts, the form
    :meth:`~scdmac.model.SCDMAC.setup_anndata` reads fastest.

    Parameters
    ----------
    source
        URL or local path of the ``.h5ad`` file.
    sha256
        Expected SHA-256 of a downloaded file (see :func:`fetch`).
    cache_dir
        Where downloads are kept (see :func:`data_dir`).

    Returns
    -------
    :class:`~anndata.AnnData`
        The file's cells and genes, counts in ``X`` (CSR, float32), labels in ``obs["cell_type"]`` when
        the file has a known label column.
    """
    import anndata
    import pandas as pd
    from scipy import sparse

    adata = anndata.read_h5ad(fetch(source, sha256=sha256, cache_dir=cache_dir))
    # one conversion, and none at all when X is already CSR float32
    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    for column in _LABEL_COLUMNS:
        if column in adata.obs:
            adata.obs["cell_type"] = pd.Categorical(adata.obs[column].astype(str))
            break
    return adata


def paul15(*, cache_dir: str | os.PathLike | None = None) -> AnnData:
    """Paul et al. 2015: 2,730 MARS-seq mouse myeloid progenitors, 3,451 genes, 19 published clusters.

    Raw UMI counts in ``X`` and the published transcriptional clusters (e.g. ``14Mo``, ``2Ery``) in
    ``obs["cell_type"]``. Downloaded from :data:`PAUL15_URL` on first use and read from the cache afterwards.

    Parameters
    ----------
    cache_dir
        Where downloads are kept (see :func:`data_dir`).

    Returns
    -------
    :class:`~anndata.AnnData`
        Cells × genes raw counts (CSR, float32), clusters in ``obs["cell_type"]``.
    """
    return read(PAUL15_URL, cache_dir=cache_dir)

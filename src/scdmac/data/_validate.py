"""Input checks that turn bad data into errors that name the problem and the fix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData


def get_counts(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``, with a clear error when the layer is missing."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        available = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise KeyError(
            f"Layer {layer!r} not found in adata.layers (available: {available}). "
            "Pass the name of the layer holding raw counts, or layer=None to use adata.X."
        )
    return adata.layers[layer]


def _values(X) -> np.ndarray:
    if sp.issparse(X):
        return X.data
    return np.asarray(X).ravel()


def check_counts(X, where: str = "adata.X") -> None:
    """Raise a ``ValueError`` unless ``X`` holds finite, non-negative integer counts in every cell.

    Parameters
    ----------
    X
        Cells × genes matrix, dense or sparse.
    where
        How to name the matrix in the error message.
    """
    if X is None:
        raise ValueError(f"{where} is empty: scdmac needs a cells × genes matrix of raw counts.")
    values = _values(X)
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{where} has dtype {values.dtype}; raw counts must be numeric.")
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(
            f"{where} contains {int((~finite).sum())} NaN or infinite values. scdmac needs finite raw "
            "counts: fix or remove those entries (for example from the raw count matrix of your source)."
        )
    if (values < 0).any():
        raise ValueError(
            f"{where} contains negative values: scdmac needs raw counts, not scaled or centred data. "
            "Pass the layer holding raw counts with setup_anndata(adata, layer=...)."
        )
    if values.size and not np.array_equal(values, np.round(values)):
        raise ValueError(
            f"{where} contains non-integer values (for example {values[values != np.round(values)][0]:g}): "
            "scdmac needs raw integer counts, not normalised or log-transformed data. Pass the layer "
            "holding raw counts with setup_anndata(adata, layer='counts')."
        )
    totals = np.asarray(X.sum(axis=1)).ravel()
    n_empty = int((totals == 0).sum())
    if n_empty:
        raise ValueError(
            f"{n_empty} cells have no counts in {where}. Remove them before setup, for example with "
            "sc.pp.filter_cells(adata, min_counts=1)."
        )
    if X.shape[1] == 0 or not (np.asarray(X.sum(axis=0)).ravel() > 0).any():
        raise ValueError(f"{where} has no gene with any count.")


def check_n_clusters(n_clusters: int | None, n_obs: int) -> None:
    """Raise unless ``n_clusters`` is ``None`` or an integer in ``[2, n_obs - 1]``."""
    if n_clusters is None:
        return
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise TypeError(f"n_clusters must be an integer or None, got {n_clusters!r}.")
    if n_clusters < 2:
        raise ValueError(f"n_clusters={n_clusters}: at least 2 clusters are needed (or None to estimate it).")
    if n_clusters >= n_obs:
        raise ValueError(
            f"n_clusters={n_clusters} is not smaller than the number of cells ({n_obs}): "
            "ask for fewer clusters or pass n_clusters=None to estimate it."
        )


def check_n_neighbors(n_neighbors: int, n_obs: int) -> None:
    """Raise unless ``1 <= n_neighbors < n_obs``."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}.")
    if n_neighbors >= n_obs:
        raise ValueError(
            f"n_neighbors={n_neighbors} is not smaller than the number of cells ({n_obs}): "
            f"pass n_neighbors of at most {n_obs - 1}."
        )

"""Input checks that turn bad data into errors that name the problem and the fix."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._preprocess import in_memory, row_chunks

#: samples with fewer cells are named in a warning: centring a sample on its own mean removes most of
#: what distinguishes its few cells (one cell is left with the overall mean profile)
MIN_SAMPLE_CELLS = 10


def get_counts(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``, with a clear error when the layer is missing.

    A backed ``X`` (``read_h5ad(..., backed="r")``) is returned as AnnData's on-disk matrix: setup
    reads it in blocks and training reads each minibatch's rows from the file.

    Parameters
    ----------
    adata
        The AnnData holding the counts.
    layer
        Name of the layer holding raw counts, or ``None`` for ``adata.X``.

    Returns
    -------
    array, sparse matrix or backed dataset
        The counts matrix as the AnnData holds it (in memory, or on disk when backed).
    """
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
    if in_memory(X):
        _check_values(X, where)
        gene_totals = np.asarray(X.sum(axis=0)).ravel()
    else:
        # backed on disk: check block by block, then the genes over all blocks
        gene_totals = np.zeros(X.shape[1])
        for start, block in row_chunks(X):
            _check_values(block, f"{where} (rows {start} to {start + block.shape[0] - 1})")
            gene_totals += np.asarray(block.sum(axis=0)).ravel()
    if X.shape[1] == 0 or not (gene_totals > 0).any():
        raise ValueError(f"{where} has no gene with any count.")


def _check_values(X, where: str) -> None:
    """The per-entry and per-cell checks of :func:`check_counts` on one in-memory block."""
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


def check_covariates(adata: AnnData, batch_key: str | None, covariate_keys: list[str]) -> np.ndarray | None:
    """Check the sample and covariate columns named at setup; return the sample codes (``None`` without one).

    Each must be a column of ``adata.obs`` without missing values, named once. Samples of fewer than
    :data:`MIN_SAMPLE_CELLS` cells are named in a warning.

    Parameters
    ----------
    adata
        The AnnData whose ``obs`` holds the columns.
    batch_key
        Column of each cell's sample, or ``None``.
    covariate_keys
        Columns of the categorical covariates.

    Returns
    -------
    :class:`numpy.ndarray` or None
        Sample code (int64) of each cell; ``None`` without ``batch_key``.
    """
    keys = ([batch_key] if batch_key is not None else []) + covariate_keys
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"Sample and covariate keys are adata.obs column names (str), got {key!r}.")
        if key not in adata.obs:
            raise KeyError(
                f"{key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:20]}): "
                "pass the name of the column that holds each cell's sample or covariate."
            )
        missing = int(adata.obs[key].isna().sum())
        if missing:
            raise ValueError(
                f"adata.obs[{key!r}] has {missing} missing value(s): give every cell a sample/covariate "
                "label (e.g. adata.obs[key] = adata.obs[key].cat.add_categories('unknown').fillna('unknown'))."
            )
    if len(set(keys)) < len(keys):
        raise ValueError(f"Each column may be named once among batch_key and categorical_covariate_keys, got {keys}.")
    if batch_key is None:
        return None
    samples = pd.Categorical(adata.obs[batch_key])
    sizes = pd.Series(samples).value_counts()
    small = sizes[(sizes > 0) & (sizes < MIN_SAMPLE_CELLS)]
    if len(small):
        named = ", ".join(f"{name!r} ({n})" for name, n in small.head(10).items())
        warnings.warn(
            f"{len(small)} sample(s) of adata.obs[{batch_key!r}] hold fewer than {MIN_SAMPLE_CELLS} cells: {named}. "
            "Each sample's expression is centred on its own mean, which removes most of what tells these few "
            "cells apart (a one-cell sample keeps nothing of its own). Merge them into a larger sample, or set up "
            "without batch_key.",
            UserWarning,
            stacklevel=4,
        )
    return samples.codes.astype(np.int64)


def check_n_clusters(n_clusters: int | None, n_obs: int) -> None:
    """Raise unless ``n_clusters`` is ``None`` or an integer in ``[2, n_obs - 1]``.

    Parameters
    ----------
    n_clusters
        Number of clusters asked for (``None``: estimated).
    n_obs
        Number of cells.
    """
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
    """Raise unless ``1 <= n_neighbors < n_obs``.

    Parameters
    ----------
    n_neighbors
        Neighbours per cell of the kNN graph.
    n_obs
        Number of cells.
    """
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}.")
    if n_neighbors >= n_obs:
        raise ValueError(
            f"n_neighbors={n_neighbors} is not smaller than the number of cells ({n_obs}): "
            f"pass n_neighbors of at most {n_obs - 1}."
        )


def check_int(name: str, value, minimum: int) -> None:
    """Raise unless ``value`` is an integer (not a bool) of at least ``minimum``.

    Parameters
    ----------
    name
        How the error message names the argument, e.g. ``"n_pcs"``.
    value
        The value checked.
    minimum
        Smallest value allowed.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}.")


#: network sizes (positive integers) and rates (a share of entries or cells, in [0, 1)) of both models
NETWORK_SIZES = ("n_latent", "n_hidden", "n_bottleneck")
NETWORK_RATES = ("dropout_rate", "mask_ratio", "drop_rate", "swap_rate")


def check_network_args(args: dict) -> None:
    """Check a model's network arguments (those of ``args`` it has) before the network is built.

    Sizes must be positive integers, ``hidden_widths`` a non-empty sequence of them, and rates lie in
    [0, 1); a bad value would otherwise fail inside torch or scikit-learn after pretraining.

    Parameters
    ----------
    args
        The model's arguments by name (e.g. its ``__init__``'s locals); only :data:`NETWORK_SIZES`,
        ``hidden_widths`` and :data:`NETWORK_RATES` are checked, and a rate of ``None`` passes.
    """
    for name in NETWORK_SIZES:
        if name in args:
            check_int(name, args[name], 1)
    if "hidden_widths" in args:
        widths = args["hidden_widths"]
        if isinstance(widths, str | bytes) or not hasattr(widths, "__len__") or len(widths) == 0:
            raise ValueError(f"hidden_widths must be a non-empty sequence of layer widths, got {widths!r}.")
        for width in widths:
            check_int("each of hidden_widths", width, 1)
    for name in NETWORK_RATES:
        value = args.get(name)
        if value is not None and not (isinstance(value, int | float) and 0 <= value < 1):
            raise ValueError(f"{name} is a share and must lie in [0, 1), got {value!r}.")


#: Lightning precisions the models train in: float32 weights, with or without mixed-precision products
PRECISIONS = ("32", "32-true", "bf16", "bf16-mixed", "16", "16-mixed")


def check_precision(precision) -> None:
    """Refuse a Lightning ``precision`` whose weights are not float32 (the outputs read float32 inputs).

    Parameters
    ----------
    precision
        Lightning's ``precision`` setting; one of :data:`PRECISIONS` (compared as a string) passes.
    """
    if str(precision) not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not supported: the models keep float32 weights. Pass '32-true', or a "
            "mixed precision ('bf16-mixed', '16-mixed')."
        )


def check_trainer_kwargs(trainer_kwargs: dict) -> None:
    """Refuse keyword arguments that neither scvi-tools' nor Lightning's trainer takes, before any training.

    Lightning would raise only once the first stage starts, after the work that comes before it.
    The error suggests the closest known name.

    Parameters
    ----------
    trainer_kwargs
        Keyword arguments meant for the trainer (those ``train()`` does not take itself).
    """
    import difflib
    import inspect

    from lightning.pytorch import Trainer as LightningTrainer
    from scvi.train import Trainer as ScviTrainer

    known = (set(inspect.signature(ScviTrainer).parameters) | set(inspect.signature(LightningTrainer).parameters)) - {
        "kwargs"
    }
    for name in sorted(set(trainer_kwargs) - known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TypeError(
            f"train() got an unexpected keyword argument {name!r}: it is neither one of train()'s own nor one of "
            f"the Lightning trainer's.{hint}"
        )


def check_train_args(
    max_epochs: int | None,
    batch_size: int,
    stages=None,
    early_stopping_patience: int | None = None,
    kmeans_n_init: int | None = None,
) -> None:
    """The checks of ``train()``'s arguments, run before any training (and by the CLI before reading data).

    Parameters
    ----------
    max_epochs
        Epochs per stage: ``None`` or an integer of at least 1.
    batch_size
        Cells per minibatch: an integer of at least 2 (a minibatch of one cell has no batch statistics).
    stages
        Stage or stages to run: ``None`` (all) or a name or non-empty sequence of names.
    early_stopping_patience, kmeans_n_init
        ``None`` or an integer of at least 1.
    """
    if max_epochs is not None:
        check_int("max_epochs", max_epochs, 1)
    # a minibatch of one cell has no batch statistics (SCDMAC's batch norm fails on it)
    check_int("batch_size", batch_size, 2)
    if early_stopping_patience is not None:
        check_int("early_stopping_patience", early_stopping_patience, 1)
    if kmeans_n_init is not None:
        check_int("kmeans_n_init", kmeans_n_init, 1)
    if stages is not None and not isinstance(stages, str) and len(list(stages)) == 0:
        raise ValueError("stages=[] trains nothing: pass stages=None for all stages, or name the ones to run.")


def check_indices(indices, n_obs: int) -> np.ndarray | None:
    """``indices`` as an int64 array of row positions in ``[0, n_obs)`` (``None`` stays ``None``).

    Parameters
    ----------
    indices
        Integer row positions (1-D), a boolean mask of ``n_obs`` entries, or ``None``.
    n_obs
        Number of cells.

    Returns
    -------
    :class:`numpy.ndarray` or None
        The positions (those of the mask's ``True`` entries for a mask).
    """
    if indices is None:
        return None
    rows = np.asarray(indices)
    if rows.dtype == bool:
        if rows.shape != (n_obs,):
            raise ValueError(f"A boolean mask of indices needs {n_obs} entries, got {rows.shape[0]}.")
        return np.flatnonzero(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D sequence of integer row positions, got {indices!r}.")
    rows = rows.astype(np.int64)
    bad = rows[(rows < 0) | (rows >= n_obs)]
    if bad.size:
        raise IndexError(
            f"indices {bad[:5].tolist()} are outside the {n_obs} cells of the AnnData (valid: 0 to {n_obs - 1})."
        )
    return rows


def check_modelled_genes(log_counts, n_genes: int) -> None:
    """Refuse gene selections a model cannot learn from: fewer than two genes, or no variation between cells.

    Parameters
    ----------
    log_counts
        Log-normalised expression of the selected genes (cells × genes, dense or sparse).
    n_genes
        Number of selected genes.
    """
    if n_genes < 2:
        raise ValueError(
            f"Only {n_genes} gene with counts could be selected: the models need at least 2. Pass more genes "
            "(n_top_genes ≥ 2, and a matrix with at least 2 detected genes)."
        )
    if sp.issparse(log_counts):
        X = sp.csr_matrix(log_counts, dtype=np.float64)
        mean, mean_sq = np.asarray(X.mean(axis=0)).ravel(), np.asarray(X.multiply(X).mean(axis=0)).ravel()
    else:
        dense = np.asarray(log_counts, dtype=np.float64)
        mean, mean_sq = dense.mean(axis=0), (dense**2).mean(axis=0)
    # relative: rounding leaves a tiny spread even between identical cells
    if not (mean_sq - mean**2 > 1e-9 * np.maximum(mean_sq, 1e-12)).any():
        raise ValueError(
            "Every cell has the same normalised expression over the selected genes: there is nothing to "
            "cluster. Check that adata holds the cells' counts (not copies of one cell)."
        )

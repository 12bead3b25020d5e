"""Registry keys, the keys of a training minibatch, and the AnnData keys the package writes."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    INDICES_KEY: str = "ind_x"
    NEIGHBORS_KEY: str = "knn_indices"
    PARTITION_KEY: str = "partition"
    # scvi-tools' own names, so its summary statistics (n_batch, ...) and views read them
    BATCH_KEY: str = "batch"
    CAT_COVS_KEY: str = "extra_categorical_covs"


class _BatchKeys(NamedTuple):
    """What a training minibatch holds (see :class:`~scdmac.data.CellDataModule`)."""

    X: str = "X"  # counts of the batch's cells, all registered genes
    INDEX: str = "index"  # their row numbers (int64), for per-cell training state such as DEC targets
    X_NEIGHBOR: str = "X_neighbor"  # counts of one kNN neighbour per cell (``"neighbor_pairs"`` batches)
    # row numbers of those neighbours, while the loader leaves reading counts to the device (DeviceCounts)
    NEIGHBOR_INDEX: str = "neighbor_index"
    ADJ: str = "adj"  # normalised adjacency of the subgraph the cells induce (``"subgraphs"`` batches)
    EDGES: str = "edges"  # (2, E) positions of that subgraph's undirected edges
    BATCH: str = "batch"  # (cells, 1) sample codes, when setup_anndata was given batch_key
    BATCH_NEIGHBOR: str = "batch_neighbor"  # sample codes of the X_neighbor cells
    CAT_COVS: str = "cat_covs"  # (cells, n_covariates) codes of categorical_covariate_keys


REGISTRY_KEYS = _RegistryKeys()
BATCH_KEYS = _BatchKeys()

"""Preprocessing, input checks, kNN graphs, augmentations, minibatch loading, public datasets and the simulator."""

from ._augment import augment_expression, mask_with_shuffled
from ._datasets import DATA_DIR_VARIABLE, PAUL15_URL, data_dir, fetch, paul15, read
from ._device import DeviceCounts
from ._graph import (
    BalancedIndex,
    CellGraph,
    NeighborIndex,
    adjacency,
    balanced_knn,
    balanced_search,
    knn,
    neighbourhood_mean,
    normalized_adjacency,
    partition_cells,
    search,
)
from ._loaders import (
    CellDataModule,
    NeighborBatchSampler,
    NeighborPairBatches,
    PartitionBatchSampler,
    cell_loader,
    read_rows,
)
from ._preprocess import (
    highly_variable_genes,
    library_size,
    log_expression,
    log_moments,
    log_normalize,
    normalization_target,
    row_chunks,
    sample_log_shift,
    selected_log_expression,
    signal_components,
)
from ._simulate import TISSUE_PROPORTIONS, simulate
from ._validate import check_counts

__all__ = [
    "DATA_DIR_VARIABLE",
    "PAUL15_URL",
    "data_dir",
    "fetch",
    "paul15",
    "read",
    "BalancedIndex",
    "NeighborIndex",
    "TISSUE_PROPORTIONS",
    "CellDataModule",
    "CellGraph",
    "DeviceCounts",
    "NeighborBatchSampler",
    "NeighborPairBatches",
    "PartitionBatchSampler",
    "adjacency",
    "augment_expression",
    "balanced_knn",
    "balanced_search",
    "cell_loader",
    "check_counts",
    "highly_variable_genes",
    "knn",
    "library_size",
    "log_expression",
    "log_moments",
    "log_normalize",
    "normalization_target",
    "mask_with_shuffled",
    "neighbourhood_mean",
    "normalized_adjacency",
    "partition_cells",
    "read_rows",
    "row_chunks",
    "sample_log_shift",
    "search",
    "selected_log_expression",
    "signal_components",
    "simulate",
]

"""Preprocessing, input checks, kNN graphs, augmentations, minibatch loading and the demo simulator."""

from ._augment import augment_expression, mask_with_shuffled
from ._graph import CellGraph, adjacency, knn, normalized_adjacency, partition_cells
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
    log_moments,
    log_normalize,
    row_chunks,
    selected_log_expression,
)
from ._simulate import TISSUE_PROPORTIONS, simulate
from ._validate import check_counts

__all__ = [
    "TISSUE_PROPORTIONS",
    "CellDataModule",
    "CellGraph",
    "NeighborBatchSampler",
    "NeighborPairBatches",
    "PartitionBatchSampler",
    "adjacency",
    "augment_expression",
    "cell_loader",
    "check_counts",
    "highly_variable_genes",
    "knn",
    "library_size",
    "log_moments",
    "log_normalize",
    "mask_with_shuffled",
    "normalized_adjacency",
    "partition_cells",
    "read_rows",
    "row_chunks",
    "selected_log_expression",
    "simulate",
]

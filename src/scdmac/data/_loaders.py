"""Minibatches drawn from an AnnData through scvi-tools' data loading, with the named inputs each stage needs."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from scvi.data import AnnDataManager
from scvi.dataloaders import AnnDataLoader
from torch.utils.data import Sampler, default_convert

from .._constants import BATCH_KEYS, REGISTRY_KEYS
from ._graph import CellGraph


def _world() -> tuple[int, int]:
    """World size and rank under ``torch.distributed`` (1, 0 otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class NeighborBatchSampler(Sampler):
    """Batches of cell positions, in a new random order each epoch.

    Under ``torch.distributed`` each rank takes every ``world_size``-th batch, and all ranks see the
    same number of batches. (The kNN neighbour paired with each cell is drawn by the collate,
    :class:`NeighborPairBatches`, so a batch is a set of distinct cells that any AnnData, in memory
    or backed on disk, can serve in one read.)

    Parameters
    ----------
    n_obs
        Number of cells.
    batch_size
        Cells per batch.
    shuffle
        Draw cells in a new random order each epoch (torch's global generator, so
        ``scvi.settings.seed`` fixes it).
    """

    def __init__(self, n_obs: int, batch_size: int, shuffle: bool = True):
        self.n_obs = int(n_obs)
        self.batch_size = int(min(batch_size, n_obs))
        self.shuffle = shuffle

    def _n_batches(self) -> int:
        n = math.ceil(self.n_obs / self.batch_size)
        # a last batch of one cell joins the one before (a single cell has no batch statistics)
        return n - 1 if n > 1 and self.n_obs % self.batch_size == 1 else n

    def __len__(self) -> int:
        world, _ = _world()
        return self._n_batches() // world if world > 1 else self._n_batches()

    def _batches(self) -> list[torch.Tensor]:
        order = torch.randperm(self.n_obs) if self.shuffle else torch.arange(self.n_obs)
        batches = list(torch.split(order, self.batch_size))
        if len(batches) > self._n_batches():
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    def __iter__(self):
        world, rank = _world()
        batches = self._batches()
        if world > 1:
            batches = batches[rank : len(self) * world : world]
        for cells in batches:
            yield cells.tolist()


class PartitionBatchSampler(NeighborBatchSampler):
    """Batches made of whole cell groups (see :func:`~scdmac.data.partition_cells`).

    Each epoch the groups are shuffled and dealt into ``ceil(n_obs / batch_size)`` batches of
    equally many groups (about ``batch_size`` cells each), so a batch's induced subgraph keeps most
    of its cells' edges. The number of batches is fixed, as distributed training needs.

    Parameters
    ----------
    partitions
        Group number of each cell.
    batch_size
        About this many cells per batch.
    shuffle
        New group order each epoch (torch's global generator).
    """

    def __init__(self, partitions: np.ndarray, batch_size: int, shuffle: bool = True):
        partitions = np.asarray(partitions, dtype=np.int64)
        super().__init__(len(partitions), batch_size, shuffle=shuffle)
        order = np.argsort(partitions, kind="stable")
        bounds = np.flatnonzero(np.diff(partitions[order])) + 1
        self.groups = [torch.from_numpy(g) for g in np.split(order, bounds)]

    def _n_batches(self) -> int:
        return min(math.ceil(self.n_obs / self.batch_size), len(self.groups))

    def _batches(self) -> list[torch.Tensor]:
        order = torch.randperm(len(self.groups)) if self.shuffle else torch.arange(len(self.groups))
        return [torch.cat([self.groups[i] for i in part]) for part in torch.tensor_split(order, self._n_batches())]


#: How a stage's minibatches are built: plain cells, cells paired with a kNN neighbour, or subgraphs.
BatchKind = Literal["cells", "neighbor_pairs", "subgraphs"]


def read_rows(matrix, rows: np.ndarray) -> np.ndarray:
    """Rows of a cells × genes matrix (in memory, or backed on disk) as a dense float32 array, in ``rows``' order.

    Each distinct row is read once, in increasing order (what an HDF5 file needs), then repeated and
    reordered as asked.
    """
    unique, inverse = np.unique(rows, return_inverse=True)
    block = matrix[unique]
    block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
    return np.ascontiguousarray(block[inverse], dtype=np.float32)


class CellBatches:
    """Collate of one sampled batch into named tensors: ``X`` (counts) and ``index`` (row numbers).

    The batch samplers yield whole batches, and scvi-tools' dataset returns them as one item, so the
    collate unwraps that item instead of stacking items.
    """

    def __deepcopy__(self, memo: dict) -> CellBatches:
        # scvi-tools' loader deep-copies its arguments; a collate only reads data shared by all
        # loaders (the cell graph, the counts, which may be an open file), so it is shared too
        return self

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        data = default_convert(items[0])
        return {
            BATCH_KEYS.X: data[REGISTRY_KEYS.X_KEY],
            BATCH_KEYS.INDEX: data[REGISTRY_KEYS.INDICES_KEY].long().view(-1),
        }


class NeighborPairBatches(CellBatches):
    """Adds ``X_neighbor``: the counts of one kNN neighbour per cell, drawn at random for each batch.

    The neighbour rows are read here, in the batch's cell order, from the registered counts (in
    memory or backed on disk); the draw takes torch's global generator, as the sampler does.

    Parameters
    ----------
    neighbors
        ``(n_obs, k)`` neighbour positions.
    counts
        The registered counts matrix (rows are read by position).
    """

    def __init__(self, neighbors: np.ndarray, counts):
        self.neighbors = torch.as_tensor(np.asarray(neighbors), dtype=torch.long)
        self.counts = counts

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        batch = super().__call__(items)
        cells = batch[BATCH_KEYS.INDEX]
        pick = torch.randint(self.neighbors.shape[1], (len(cells),))
        neighbor = read_rows(self.counts, self.neighbors[cells, pick].numpy())
        return {**batch, BATCH_KEYS.X_NEIGHBOR: torch.from_numpy(neighbor)}


class SubgraphBatches(CellBatches):
    """Adds the subgraph a batch's cells induce in ``graph``: ``adj`` (normalised, sparse) and ``edges``.

    Built here, in the loader (and so in its worker processes when it has any); Lightning moves the
    whole batch to the training device.

    Parameters
    ----------
    graph
        The cell graph of all cells.
    """

    def __init__(self, graph: CellGraph):
        self.graph = graph

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        batch = super().__call__(items)
        sub = self.graph.subgraph(batch[BATCH_KEYS.INDEX].numpy())
        return {**batch, BATCH_KEYS.ADJ: sub["adj"], BATCH_KEYS.EDGES: sub["edges"]}


def cell_loader(
    adata_manager: AnnDataManager,
    batch_size: int,
    batches: BatchKind = "cells",
    shuffle: bool = False,
    neighbors: np.ndarray | None = None,
    partitions: np.ndarray | None = None,
    graph: CellGraph | None = None,
) -> AnnDataLoader:
    """An :class:`~scvi.dataloaders.AnnDataLoader` over all cells giving named minibatches.

    Parameters
    ----------
    adata_manager
        The model's registered manager.
    batch_size
        Cells per minibatch (about this many for ``"subgraphs"``).
    batches
        ``"cells"``: random cells. ``"neighbor_pairs"``: random cells and one kNN neighbour of each
        (``neighbors`` needed; :class:`NeighborBatchSampler`). ``"subgraphs"``: whole cell groups
        (``partitions`` needed; :class:`PartitionBatchSampler`) with the subgraph they induce in
        ``graph``.
    shuffle
        New random batches each epoch.
    neighbors, partitions, graph
        The kNN neighbour positions, cell groups and cell graph the batch kind needs.

    Returns
    -------
    :class:`~scvi.dataloaders.AnnDataLoader`
        Yields dicts with the keys of ``scdmac._constants.BATCH_KEYS`` the batch kind provides.
    """
    sampler: NeighborBatchSampler
    collate: CellBatches
    if batches == "subgraphs":
        if partitions is None or graph is None:
            raise ValueError('batches="subgraphs" needs the cell partitions and the cell graph.')
        sampler = PartitionBatchSampler(partitions, batch_size, shuffle=shuffle)
        collate = SubgraphBatches(graph)
    elif batches == "neighbor_pairs":
        if neighbors is None:
            raise ValueError('batches="neighbor_pairs" needs the kNN neighbour positions.')
        sampler = NeighborBatchSampler(adata_manager.adata.n_obs, batch_size, shuffle=shuffle)
        collate = NeighborPairBatches(neighbors, adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY))
    elif batches == "cells":
        sampler = NeighborBatchSampler(adata_manager.adata.n_obs, batch_size, shuffle=shuffle)
        collate = CellBatches()
    else:
        raise ValueError(f"batches must be 'cells', 'neighbor_pairs' or 'subgraphs', not {batches!r}.")
    return AnnDataLoader(
        adata_manager,
        sampler=sampler,
        data_and_attributes=[REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.INDICES_KEY],
        collate_fn=collate,
    )


class CellDataModule(LightningDataModule):
    """All cells for training (clustering needs every cell), no validation split.

    Parameters
    ----------
    adata_manager
        The model's registered manager.
    batch_size
        Cells per minibatch.
    batches
        How minibatches are built (see :func:`cell_loader`).
    neighbors, partitions, graph
        What that batch kind needs (see :func:`cell_loader`).
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        batch_size: int,
        batches: BatchKind = "cells",
        neighbors: np.ndarray | None = None,
        partitions: np.ndarray | None = None,
        graph: CellGraph | None = None,
    ):
        super().__init__()
        self.adata_manager = adata_manager
        self.batch_size = batch_size
        self.batches = batches
        self.neighbors = neighbors
        self.partitions = partitions
        self.graph = graph
        self.n_train = adata_manager.adata.n_obs
        self.n_val = 0

    def train_dataloader(self) -> AnnDataLoader:
        """Shuffled minibatches over all cells, of the module's batch kind."""
        return cell_loader(
            self.adata_manager,
            self.batch_size,
            self.batches,
            shuffle=True,
            neighbors=self.neighbors,
            partitions=self.partitions,
            graph=self.graph,
        )

    def val_dataloader(self):
        """No validation split: an empty list."""
        return []

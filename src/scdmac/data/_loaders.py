"""Minibatches drawn from an AnnData through scvi-tools' data loading, optionally with kNN neighbours."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from scvi.data import AnnDataManager
from scvi.dataloaders import AnnDataLoader
from torch.utils.data import Sampler, default_convert


def _world() -> tuple[int, int]:
    """World size and rank under ``torch.distributed`` (1, 0 otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class NeighborBatchSampler(Sampler):
    """Batches of cell positions, each followed by one randomly drawn kNN neighbour per cell.

    A batch of ``b`` cells is yielded as ``2 b`` positions: the cells, then one neighbour of each, in
    the same order, so ``tensors[:b]`` and ``tensors[b:]`` pair up. Without ``neighbors`` it yields
    plain batches. Under ``torch.distributed`` each rank takes every ``world_size``-th batch, and all
    ranks see the same number of batches.

    Parameters
    ----------
    n_obs
        Number of cells.
    batch_size
        Cells per batch (before neighbours are added).
    shuffle
        Draw cells in a new random order each epoch (torch's global generator, so
        ``scvi.settings.seed`` fixes it).
    neighbors
        ``(n_obs, k)`` neighbour positions, or ``None``.
    """

    def __init__(self, n_obs: int, batch_size: int, shuffle: bool = True, neighbors: np.ndarray | None = None):
        self.n_obs = int(n_obs)
        self.batch_size = int(min(batch_size, n_obs))
        self.shuffle = shuffle
        self.neighbors = None if neighbors is None else torch.as_tensor(np.asarray(neighbors), dtype=torch.long)

    def _n_batches(self) -> int:
        return math.ceil(self.n_obs / self.batch_size)

    def __len__(self) -> int:
        world, _ = _world()
        return self._n_batches() // world if world > 1 else self._n_batches()

    def _batches(self) -> list[torch.Tensor]:
        order = torch.randperm(self.n_obs) if self.shuffle else torch.arange(self.n_obs)
        return list(torch.split(order, self.batch_size))

    def __iter__(self):
        world, rank = _world()
        batches = self._batches()
        if world > 1:
            batches = batches[rank : len(self) * world : world]
        for cells in batches:
            if self.neighbors is not None:
                pick = torch.randint(self.neighbors.shape[1], (len(cells),))
                cells = torch.cat([cells, self.neighbors[cells, pick]])
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


def _unwrap(items: list):
    return default_convert(items[0])


def cell_loader(
    adata_manager: AnnDataManager,
    batch_size: int,
    shuffle: bool = False,
    neighbors: np.ndarray | None = None,
    data_and_attributes: list[str] | None = None,
    partitions: np.ndarray | None = None,
) -> AnnDataLoader:
    """An :class:`~scvi.dataloaders.AnnDataLoader` over all cells driven by our batch samplers.

    Batches are whole cell groups when ``partitions`` is given (:class:`PartitionBatchSampler`),
    otherwise random cells, each followed by a neighbour when ``neighbors`` is given
    (:class:`NeighborBatchSampler`).
    """
    if partitions is not None:
        sampler = PartitionBatchSampler(partitions, batch_size, shuffle=shuffle)
    else:
        sampler = NeighborBatchSampler(adata_manager.adata.n_obs, batch_size, shuffle=shuffle, neighbors=neighbors)
    # the sampler yields whole batches; with a sampler given, AnnDataLoader keeps torch's automatic
    # batching of one item, so unwrap that item instead of stacking it
    return AnnDataLoader(
        adata_manager,
        sampler=sampler,
        data_and_attributes=data_and_attributes,
        collate_fn=_unwrap,
    )


class CellDataModule(LightningDataModule):
    """All cells for training (clustering needs every cell), no validation split.

    Parameters
    ----------
    adata_manager
        The model's registered manager.
    batch_size
        Cells per minibatch.
    neighbors
        Neighbour positions to append to each batch (see :class:`NeighborBatchSampler`), or ``None``.
    partitions
        Cell groups to build batches from (see :class:`PartitionBatchSampler`), or ``None``.
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        batch_size: int,
        neighbors: np.ndarray | None = None,
        partitions: np.ndarray | None = None,
    ):
        super().__init__()
        self.adata_manager = adata_manager
        self.batch_size = batch_size
        self.neighbors = neighbors
        self.partitions = partitions
        self.n_train = adata_manager.adata.n_obs
        self.n_val = 0

    def train_dataloader(self) -> AnnDataLoader:
        """Minibatches over all cells, shuffled, from the batch sampler the arguments select."""
        return cell_loader(
            self.adata_manager, self.batch_size, shuffle=True, neighbors=self.neighbors, partitions=self.partitions
        )

    def val_dataloader(self):
        """No validation split: an empty list."""
        return []

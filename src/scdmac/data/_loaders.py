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

    def _world(self) -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _n_batches(self) -> int:
        return math.ceil(self.n_obs / self.batch_size)

    def __len__(self) -> int:
        world, _ = self._world()
        return self._n_batches() // world if world > 1 else self._n_batches()

    def __iter__(self):
        order = torch.randperm(self.n_obs) if self.shuffle else torch.arange(self.n_obs)
        world, rank = self._world()
        batches = list(torch.split(order, self.batch_size))
        if world > 1:
            batches = batches[rank : len(self) * world : world]
        for cells in batches:
            if self.neighbors is not None:
                pick = torch.randint(self.neighbors.shape[1], (len(cells),))
                cells = torch.cat([cells, self.neighbors[cells, pick]])
            yield cells.tolist()


def _unwrap(items: list):
    return default_convert(items[0])


def cell_loader(
    adata_manager: AnnDataManager,
    batch_size: int,
    shuffle: bool = False,
    neighbors: np.ndarray | None = None,
    data_and_attributes: list[str] | None = None,
) -> AnnDataLoader:
    """An :class:`~scvi.dataloaders.AnnDataLoader` over all cells driven by :class:`NeighborBatchSampler`."""
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
    """

    def __init__(self, adata_manager: AnnDataManager, batch_size: int, neighbors: np.ndarray | None = None):
        super().__init__()
        self.adata_manager = adata_manager
        self.batch_size = batch_size
        self.neighbors = neighbors
        self.n_train = adata_manager.adata.n_obs
        self.n_val = 0

    def train_dataloader(self) -> AnnDataLoader:
        return cell_loader(self.adata_manager, self.batch_size, shuffle=True, neighbors=self.neighbors)

    def val_dataloader(self):
        return []

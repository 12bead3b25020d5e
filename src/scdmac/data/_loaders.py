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
from ._device import DeviceCounts, check_counts_on_device
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
    cells
        Positions of the cells to draw from (default: all ``n_obs``), e.g. a training split.
    """

    def __init__(self, n_obs: int, batch_size: int, shuffle: bool = True, cells: np.ndarray | None = None):
        self.cells = torch.arange(int(n_obs)) if cells is None else torch.as_tensor(np.asarray(cells), dtype=torch.long)
        self.n_obs = len(self.cells)
        self.batch_size = int(max(1, min(batch_size, self.n_obs)))
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
        batches = list(torch.split(self.cells[order], self.batch_size))
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
    cells
        Positions of the cells to draw from (default: all), e.g. a training split: groups are then
        made of those cells only.
    """

    def __init__(self, partitions: np.ndarray, batch_size: int, shuffle: bool = True, cells: np.ndarray | None = None):
        partitions = np.asarray(partitions, dtype=np.int64)
        super().__init__(len(partitions), batch_size, shuffle=shuffle, cells=cells)
        members = self.cells.numpy()
        order = members[np.argsort(partitions[members], kind="stable")]
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

    Parameters
    ----------
    matrix
        Cells × genes, dense or sparse.
    rows
        Row positions, in any order, repeats allowed.

    Returns
    -------
    :class:`numpy.ndarray`
        ``(len(rows), n_genes)`` float32, C-contiguous.
    """
    unique, inverse = np.unique(rows, return_inverse=True)
    block = matrix[unique]
    block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
    return np.ascontiguousarray(block[inverse], dtype=np.float32)


#: registered covariates a minibatch carries, when setup registered them, under their batch names
_COVARIATES = {REGISTRY_KEYS.BATCH_KEY: BATCH_KEYS.BATCH, REGISTRY_KEYS.CAT_COVS_KEY: BATCH_KEYS.CAT_COVS}


class CellBatches:
    """Collate of one sampled batch into named tensors: ``X`` (counts), ``index`` (row numbers), and more.

    When registered, ``batch`` (sample codes) and ``cat_covs`` (covariate codes) too.

    The batch samplers yield whole batches, and scvi-tools' dataset returns them as one item, so the
    collate unwraps that item instead of stacking items.
    """

    def __deepcopy__(self, memo: dict) -> CellBatches:
        # scvi-tools' loader deep-copies its arguments; a collate only reads data shared by all
        # loaders (the cell graph, the counts, which may be an open file), so it is shared too
        return self

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        data = default_convert(items[0])
        batch = {BATCH_KEYS.INDEX: data[REGISTRY_KEYS.INDICES_KEY].long().view(-1)}
        if REGISTRY_KEYS.X_KEY in data:  # else the counts are read on the training device
            batch[BATCH_KEYS.X] = data[REGISTRY_KEYS.X_KEY]
        for registry_key, batch_key in _COVARIATES.items():
            if registry_key in data:
                codes = torch.as_tensor(data[registry_key]).long()
                batch[batch_key] = codes.view(codes.shape[0], -1)
        return batch


class NeighborPairBatches(CellBatches):
    """Adds ``X_neighbor``: the counts of one kNN neighbour per cell, drawn at random for each batch.

    The neighbour rows are read here, in the batch's cell order, from the registered counts (in
    memory or backed on disk); the draw takes torch's global generator, as the sampler does. Without
    ``counts``, the batch carries the neighbours' row numbers instead (``neighbor_index``), for the
    counts to be read on the training device (:class:`~scdmac.data.CellDataModule`).

    Parameters
    ----------
    neighbors
        ``(n_obs, k)`` neighbour positions.
    counts
        The registered counts matrix (rows are read by position), or ``None``.
    samples
        Sample code of every cell, when a sample is registered: the neighbours' codes are added as
        ``batch_neighbor``.
    """

    def __init__(self, neighbors: np.ndarray, counts, samples: np.ndarray | None = None):
        self.neighbors = torch.as_tensor(np.asarray(neighbors), dtype=torch.long)
        self.counts = counts
        self.samples = None if samples is None else torch.as_tensor(np.asarray(samples).ravel(), dtype=torch.long)

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        batch = super().__call__(items)
        cells = batch[BATCH_KEYS.INDEX]
        pick = torch.randint(self.neighbors.shape[1], (len(cells),))
        rows = self.neighbors[cells, pick]
        if self.counts is None:
            batch[BATCH_KEYS.NEIGHBOR_INDEX] = rows
        else:
            batch[BATCH_KEYS.X_NEIGHBOR] = torch.from_numpy(read_rows(self.counts, rows.numpy()))
        if self.samples is not None:
            batch[BATCH_KEYS.BATCH_NEIGHBOR] = self.samples[rows].view(-1, 1)
        return batch


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
    cells: np.ndarray | None = None,
    read_counts: bool = True,
    **loader_kwargs,
) -> AnnDataLoader:
    """An :class:`~scvi.dataloaders.AnnDataLoader` over all cells (or ``cells``) giving named minibatches.

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
    cells
        Positions of the cells to draw minibatches from (default: all).
    read_counts
        Read the counts of the batch's cells (``X``, ``X_neighbor``); ``False`` leaves them to be read
        on the training device from the row numbers (``index``, ``neighbor_index``).
    **loader_kwargs
        Passed to :class:`~scvi.dataloaders.AnnDataLoader` and torch's ``DataLoader``
        (``num_workers``, ``pin_memory``, ``persistent_workers``, ``load_sparse_tensor``).

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
        sampler = PartitionBatchSampler(partitions, batch_size, shuffle=shuffle, cells=cells)
        collate = SubgraphBatches(graph)
    elif batches == "neighbor_pairs":
        if neighbors is None:
            raise ValueError('batches="neighbor_pairs" needs the kNN neighbour positions.')
        sampler = NeighborBatchSampler(adata_manager.adata.n_obs, batch_size, shuffle=shuffle, cells=cells)
        samples = (
            adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)
            if REGISTRY_KEYS.BATCH_KEY in adata_manager.data_registry
            else None
        )
        counts = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY) if read_counts else None
        collate = NeighborPairBatches(neighbors, counts, samples)
    elif batches == "cells":
        sampler = NeighborBatchSampler(adata_manager.adata.n_obs, batch_size, shuffle=shuffle, cells=cells)
        collate = CellBatches()
    else:
        raise ValueError(f"batches must be 'cells', 'neighbor_pairs' or 'subgraphs', not {batches!r}.")
    registered = adata_manager.data_registry
    covariates = [key for key in _COVARIATES if key in registered]
    fields = [REGISTRY_KEYS.X_KEY] if read_counts else []
    return AnnDataLoader(
        adata_manager,
        sampler=sampler,
        data_and_attributes=[*fields, REGISTRY_KEYS.INDICES_KEY, *covariates],
        collate_fn=collate,
        **loader_kwargs,
    )


class CellDataModule(LightningDataModule):
    """Minibatches of the training cells, and of the validation cells when a split is asked for.

    By default every cell trains (clustering needs every cell, and the DEC targets cover all of them
    either way); with ``validation_size``, a share of the cells is held out of the minibatches and
    their loss is computed at the end of each validation epoch (``{stage}_validation_loss``).

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
    train_size, validation_size
        Shares of the cells that train and validate, checked as scvi-tools checks them (default:
        all cells train, none validate).
    shuffle_set_split
        Draw the split at random (``scvi.settings.seed``); else the first cells train.
    device_counts
        The counts, to be read on the training device (:class:`~scdmac.data.DeviceCounts`): the
        loaders then give only row numbers, and :meth:`on_after_batch_transfer` cuts the batch's
        counts on the device.
    counts_on_device
        When to do so: ``"auto"`` when training on a GPU and the counts take at most a quarter of
        its free memory, ``True`` always (on a CPU too), ``False`` never. When the loader reads the
        counts for a GPU, it pins them (``pin_memory=True``) unless ``loader_kwargs`` say otherwise.
    **loader_kwargs
        Passed to every loader (see :func:`cell_loader`).
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        batch_size: int,
        batches: BatchKind = "cells",
        neighbors: np.ndarray | None = None,
        partitions: np.ndarray | None = None,
        graph: CellGraph | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        device_counts: DeviceCounts | None = None,
        counts_on_device: bool | Literal["auto"] = "auto",
        **loader_kwargs,
    ):
        super().__init__()
        check_counts_on_device(counts_on_device)
        if counts_on_device is True and device_counts is None:
            raise ValueError("counts_on_device=True needs the counts (device_counts).")
        self.device_counts = device_counts
        self.counts_on_device = counts_on_device
        self.adata_manager = adata_manager
        self.batch_size = batch_size
        self.batches = batches
        self.neighbors = neighbors
        self.partitions = partitions
        self.graph = graph
        self.loader_kwargs = loader_kwargs
        # scvi-tools' names: its TrainRunner copies them to model.train_indices and model.validation_indices
        self.train_idx, self.val_idx = split_cells(
            adata_manager.adata.n_obs, train_size, validation_size, shuffle_set_split
        )
        self.test_idx = np.array([], dtype=np.int64)
        self.n_train = len(self.train_idx)
        self.n_val = len(self.val_idx)

    def reads_on_device(self) -> bool:
        """Whether batches' counts are cut on the training device (see ``counts_on_device``)."""
        if self.device_counts is None or self.counts_on_device is False:
            return False
        if self.counts_on_device is True:
            return True
        trainer = getattr(self, "trainer", None)
        return trainer is not None and self.device_counts.fits(trainer.strategy.root_device)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Cut the batch's counts (``X``; ``X_neighbor`` of pair batches) on its device, when the loader left them."""
        if self.device_counts is not None and BATCH_KEYS.X not in batch:
            batch[BATCH_KEYS.X] = self.device_counts.rows(batch[BATCH_KEYS.INDEX])
            if BATCH_KEYS.NEIGHBOR_INDEX in batch:
                batch[BATCH_KEYS.X_NEIGHBOR] = self.device_counts.rows(batch.pop(BATCH_KEYS.NEIGHBOR_INDEX))
        return batch

    def _loader(self, cells: np.ndarray, shuffle: bool) -> AnnDataLoader:
        on_device = self.reads_on_device()
        loader_kwargs = dict(self.loader_kwargs)
        trainer = getattr(self, "trainer", None)
        if not on_device and trainer is not None and trainer.strategy.root_device.type == "cuda":
            # counts read by the loader go to the GPU from page-locked memory unless the user says otherwise
            loader_kwargs.setdefault("pin_memory", True)
        return cell_loader(
            self.adata_manager,
            self.batch_size,
            self.batches,
            shuffle=shuffle,
            neighbors=self.neighbors,
            partitions=self.partitions,
            graph=self.graph,
            cells=cells,
            read_counts=not on_device,
            **loader_kwargs,
        )

    def train_dataloader(self) -> AnnDataLoader:
        """Shuffled minibatches over the training cells, of the module's batch kind."""
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self):
        """Minibatches over the validation cells (an empty list without a validation split)."""
        return self._loader(self.val_idx, shuffle=False) if self.n_val else []


def split_cells(
    n_obs: int, train_size: float | None, validation_size: float | None, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation cell positions, sized by scvi-tools' own rule (``validate_data_split``).

    Parameters
    ----------
    n_obs
        Number of cells.
    train_size, validation_size
        Shares of the cells that train and validate. Both ``None``: every cell trains; only
        ``validation_size``: the other cells train; only ``train_size``: the other cells validate.
    shuffle
        Draw the split at random, following ``scvi.settings.seed`` as scvi-tools' data splitter does;
        else the first cells train.

    Returns
    -------
    train, validation
        Sorted int64 positions of the training and of the validation cells.
    """
    from scvi import settings
    from scvi.dataloaders._data_splitting import validate_data_split

    if train_size is None and validation_size is None:
        return np.arange(n_obs), np.arange(0)
    if train_size is None:  # only a validation share given: the other cells train
        train_size = 1.0 - float(validation_size)  # type: ignore[arg-type]
    n_train, n_val = validate_data_split(n_obs, train_size, validation_size)
    order = np.random.default_rng(settings.seed).permutation(n_obs) if shuffle else np.arange(n_obs)
    return np.sort(order[:n_train]), np.sort(order[n_train : n_train + n_val])

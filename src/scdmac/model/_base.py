"""What both deep-clustering models share: registration, staged training, outputs and cluster numbers."""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

# scvi-tools 1.4's AnnDataManager.view_registry calls rich.pretty without importing it (rich 15 no
# longer imports it on the way): importing it here makes model.view_anndata_setup() work
import rich.pretty  # noqa: F401
import torch
from anndata import AnnData
from lightning.pytorch.callbacks import Callback
from scvi import settings
from scvi.data import AnnDataManager
from scvi.data._constants import _SCVI_UUID_KEY
from scvi.data._utils import _assign_adata_uuid
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalObsField,
    ObsmField,
)
from scvi.model.base import ArchesMixin, BaseModelClass
from scvi.train import TrainRunner

from .._constants import REGISTRY_KEYS
from .._logging import package_logger, quiet_lightning, quiet_loggers
from ..data._device import DeviceCounts, check_counts_on_device
from ..data._graph import CellGraph, KnnMethod, balanced_knn, knn, neighbourhood_mean, partition_cells
from ..data._loaders import BatchKind, CellDataModule, split_cells
from ..data._preprocess import (
    TARGET_SUM,
    in_memory,
    library_size,
    log_moments,
    normalization_target,
    pca,
    random_rows,
    row_chunks,
    sample_log_shift,
    selected_log_expression,
    unit_variance,
)
from ..data._validate import (
    check_counts,
    check_covariates,
    check_indices,
    check_int,
    check_modelled_genes,
    check_n_clusters,
    check_n_neighbors,
    check_network_args,
    check_precision,
    check_train_args,
    check_trainer_kwargs,
    get_counts,
)
from ..train import ClusterPlan, RelativePlateau, Stage, StagePlan, StageProgressBar
from ..train._precision import default_precision
from ._expression import ExpressionMixin
from ._files import (
    check_same_genes,
    check_save_target,
    check_saved_anndata,
    check_saved_model,
    read_checkpoint,
    read_saved_var_names,
    remove_checkpoint,
    write_checkpoint,
    write_checksum,
)
from ._n_clusters import estimate_n_clusters, leiden_at_k
from ._query import align_genes, query_manager

logger = logging.getLogger(__name__)
package_logger()  # the package's lines print through scvi-tools' console


#: the Leiden start of the clustering stage partitions at most this many random cells
LEIDEN_START_CELLS = 50_000


def _seed() -> int:
    """The seed of every random choice outside torch (k-means, Leiden, splits): ``scvi.settings.seed``."""
    return int(settings.seed) if settings.seed is not None else 0


@contextmanager
def _timed(step: str):
    """Log how long a setup step took (``scdmac`` logger, debug level; benchmarks read it)."""
    start = time.perf_counter()
    yield
    logger.debug("setup step %r took %.2f s", step, time.perf_counter() - start)


def _plan_args(plan_cls: type) -> set[str]:
    """Keyword arguments a training plan takes from ``plan_kwargs`` (``lr`` and ``tol`` are ``train``'s own)."""
    params = inspect.signature(plan_cls).parameters
    given_by_train = {"module", "stage", "embed_all", "lr", "tol"}
    return {k for k, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - given_by_train


def _global_rank() -> int:
    """The rank of this process in a distributed training (0 when there is none)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_rank() if distributed else 0


def _merge_history(old: dict | None, new: dict | None) -> dict:
    """Append a stage's logged metrics to the model's history, keeping keys only one of them has.

    scvi-tools' runner appends only to keys already present; stages log different losses.
    """
    merged = dict(old or {})
    # epochs each stage ran before (every key of a stage shares its epochs: a validation loss or a refresh
    # logged every few epochs keeps its place), counted before anything new is added
    ran: dict[str, int] = {}
    for key, frame in merged.items():
        if len(frame):
            stage = key.split("_", 1)[0]
            ran[stage] = max(ran.get(stage, 0), int(frame.index.max()) + 1)
    for key, frame in (new or {}).items():
        if key in merged:
            frame = frame.copy()
            frame.index = np.asarray(frame.index, dtype=np.int64) + ran.get(key.split("_", 1)[0], 0)
            frame.index.name = merged[key].index.name
            merged[key] = pd.concat([merged[key], frame])
        else:
            merged[key] = frame
    return merged


def _epochs_logged(history: dict | None, stage: str) -> int:
    """Epochs that ``stage`` logged its loss for in one training's ``history`` (0 when it logged none)."""
    frame = (history or {}).get(f"{stage}_loss")
    return 0 if frame is None else len(frame)


class DeepClusteringModel(ExpressionMixin, BaseModelClass):
    """Base of :class:`~scdmac.model.SCDMAC` and :class:`~scdmac.model.SCDSEC`.

    Subclasses set ``_prefix`` (the name used in AnnData keys), ``_graph_metric``,
    ``_default_batch_size`` and their module class, and declare their stages in :meth:`_stages`;
    :meth:`train` runs them.
    """

    _prefix: str = "deep"
    _graph_metric: str = "euclidean"
    #: the training data's cell graph, built when first needed
    _graph: CellGraph | None = None
    #: cells per minibatch unless ``train(batch_size=...)`` says otherwise
    _default_batch_size: int = 256
    #: how the clustering stage places its centres unless ``train(cluster_init=...)`` says otherwise
    _cluster_init: Literal["kmeans", "leiden"] = "kmeans"
    #: exponent of a cluster's size in DEC's target unless ``plan_kwargs["target_balance"]`` says otherwise
    _target_balance: float = 1.0
    #: what query cells are placed on, for models whose outputs depend on graph neighbours
    _reference_cache: object | None = None
    #: a whole-data pass a model may reuse while the weights stand; a dict only inside :meth:`train`
    _pass_cache: dict | None = None
    #: the last query AnnData, its fingerprint and the AnnData prepared from it (:meth:`prepare_query`)
    _query: tuple[AnnData, tuple, AnnData] | None = None

    # ---- registration -------------------------------------------------------------------------
    @classmethod
    def hvg_key(cls) -> str:
        """``adata.var`` column marking the genes the model uses."""
        return f"{cls._prefix}_hvg"

    @classmethod
    def neighbors_key(cls) -> str:
        """``adata.obsm`` key of the kNN graph (neighbour indices) registered for minibatches."""
        return f"_{cls._prefix}_neighbors"

    @classmethod
    def indices_key(cls) -> str:
        """``adata.obs`` column with each cell's row number (registered for per-cell training state)."""
        return f"_{cls._prefix}_indices"

    @classmethod
    def partition_key(cls) -> str:
        """``adata.obs`` column with each cell's minibatch group (graph models only)."""
        return f"_{cls._prefix}_partition"

    @classmethod
    def _setup(
        cls,
        adata: AnnData,
        layer: str | None,
        n_top_genes: int,
        n_neighbors: int,
        n_pcs: int,
        gene_min_fraction: float,
        setup_method_args: dict,
        partition_size: int | None = None,
        metric: str | None = None,
        knn_method: KnnMethod = "auto",
        batch_key: str | None = None,
        categorical_covariate_keys: Sequence[str] | None = None,
        pcs_above_noise: bool = False,
        target_sum: float | None = TARGET_SUM,
        scale_genes: bool = False,
        **kwargs,
    ) -> None:
        """Validate counts, select genes, build the kNN graph and register the fields.

        Cells are log-normalised to ``target_sum`` total counts (``None``: the median library size).
        With ``scale_genes``, each selected gene is divided by its standard deviation before PCA.

        With ``partition_size``, cells are also grouped for subgraph minibatches
        (:func:`~scdmac.data.partition_cells`) and the groups registered. With ``batch_key``, the
        graph is batch-balanced (:func:`~scdmac.data.balanced_knn`) and the groups are made on
        principal components averaged over it, so that both cross samples.
        """
        if adata.is_view:
            raise ValueError(
                "adata is a view of another AnnData, and setup adds keys to it: make it an AnnData of its own "
                "first, with adata = adata.copy()."
            )
        counts = get_counts(adata, layer)
        check_counts(counts, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
        check_n_neighbors(n_neighbors, adata.n_obs)
        check_int("n_top_genes", n_top_genes, 2)
        check_int("n_pcs", n_pcs, 1)
        if partition_size is not None:
            check_int("partition_size", partition_size, 2)
        if knn_method not in ("auto", "exact", "approximate"):
            raise ValueError(f"knn_method must be 'auto', 'exact' or 'approximate', got {knn_method!r}.")
        covariate_keys = list(categorical_covariate_keys or [])
        samples = check_covariates(adata, batch_key, covariate_keys)
        target = normalization_target(counts, target_sum)
        seed = _seed()
        with _timed("log-normalisation and gene selection"):
            min_cells = max(1, int(np.ceil(gene_min_fraction * adata.n_obs)))
            hvg, log_selected = selected_log_expression(
                counts, n_top_genes, min_cells, random_state=seed, target_sum=target
            )
            check_modelled_genes(log_selected, int(hvg.sum()))
        with _timed("PCA"):
            if scale_genes:
                log_selected = unit_variance(log_selected)[0]
            pcs = pca(log_selected, n_pcs, random_state=seed, above_noise=pcs_above_noise)
        if pcs_above_noise and pcs.shape[1] < min(n_pcs, log_selected.shape[0] - 1, log_selected.shape[1] - 1):
            logger.info(
                "%s graph on %d principal components: the others fall below the noise threshold.",
                cls.__name__,
                pcs.shape[1],
            )
        del log_selected
        with _timed("kNN search"):
            metric = metric or cls._graph_metric
            if samples is None:
                indices, _ = knn(pcs, n_neighbors, metric=metric, random_state=seed, method=knn_method)
            else:
                indices, _ = balanced_knn(
                    pcs, samples, n_neighbors, metric=metric, random_state=seed, method=knn_method
                )

        adata.var[cls.hvg_key()] = hvg
        adata.obsm[cls.neighbors_key()] = indices
        adata.obs[cls.indices_key()] = np.arange(adata.n_obs)
        fields = [
            # no data-format correction: scvi-tools would replace a Fortran-ordered X by a copy in place
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True, correct_data_format=False),
            ObsmField(REGISTRY_KEYS.NEIGHBORS_KEY, cls.neighbors_key()),
            NumericalObsField(REGISTRY_KEYS.INDICES_KEY, cls.indices_key()),
        ]
        # sample and covariates only when given: data without them keep exactly the fields they had
        if batch_key is not None:
            fields.append(CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key))
        if covariate_keys:
            fields.append(CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, covariate_keys))
        if partition_size is not None:
            with _timed("partition"):
                # groups of cells alike across samples: on components averaged over the balanced graph
                coords = pcs if samples is None else neighbourhood_mean(pcs, indices)
                adata.obs[cls.partition_key()] = partition_cells(coords, partition_size, random_state=seed)
            fields.append(NumericalObsField(REGISTRY_KEYS.PARTITION_KEY, cls.partition_key()))
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        # scvi-tools notes that the neighbour matrix has no column names: true, and nothing to act on
        with quiet_loggers("scvi.data.fields._arraylike_field"):
            manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def _model_inputs(self) -> dict:
        """Gene positions, median library size and normalisation target for the module, from the registered data."""
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        hvg = self.adata.var[self.hvg_key()].to_numpy(dtype=bool)
        inputs = {
            "n_input": self.summary_stats.n_vars,
            "gene_indices": np.flatnonzero(hvg),
            "median_library": float(np.median(library_size(counts))),
            "n_cat_list": self._covariate_levels(),
            # data set up before target_sum existed were normalised to the fixed target
            "target_sum": self.adata_manager.registry["setup_args"].get("target_sum", TARGET_SUM),
        }
        inputs["sample_shift"] = self._sample_shift(counts, inputs["gene_indices"], self._input_target(inputs))
        return inputs

    @staticmethod
    def _input_target(inputs: dict) -> float:
        """The total counts the module built from ``inputs`` (:meth:`_model_inputs`) will scale each cell to."""
        return inputs["median_library"] if inputs["target_sum"] is None else float(inputs["target_sum"])

    def _input_moments(self, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        """Per-gene mean and variance over all cells of the log expression a module built from ``inputs`` reads.

        For a module's input scaling fixed before training (:func:`~scdmac.data.log_moments`).
        """
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        return log_moments(counts, inputs["gene_indices"], self._input_target(inputs))

    def _normalization_target(self) -> float:
        """Total counts the trained module scales each cell to before ``log1p`` (see ``setup_anndata``)."""
        return self.module.normalization_target()

    def _sample_shift(self, counts, gene_indices: np.ndarray, target: float) -> np.ndarray | None:
        """Each registered sample's shift of the mean log expression (``None`` without a sample)."""
        if REGISTRY_KEYS.BATCH_KEY not in self.adata_manager.data_registry:
            return None
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        return sample_log_shift(counts, gene_indices, codes, int(self.summary_stats.n_batch), target)

    def _covariate_levels(self) -> list[int]:
        """Number of levels of the sample (first) and of each categorical covariate, as registered."""
        registry = self.adata_manager.data_registry
        levels = []
        if REGISTRY_KEYS.BATCH_KEY in registry:
            levels.append(int(self.summary_stats.n_batch))
        if REGISTRY_KEYS.CAT_COVS_KEY in registry:
            state = self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
            levels.extend(int(n) for n in state.n_cats_per_key)
        return levels

    def _module_kwargs(self, init_locals: dict) -> dict:
        """The module's hyperparameters, taken from the model's ``__init__`` arguments of the same name."""
        check_network_args(init_locals)
        names = inspect.signature(self._module_cls).parameters
        return {k: v for k, v in init_locals.items() if k in names}

    def _neighbors(self) -> np.ndarray:
        return np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.NEIGHBORS_KEY), dtype=np.int64)

    def _cell_graph(self, adata: AnnData | None = None) -> CellGraph:
        """The symmetric kNN graph of ``adata``'s cells (of the training data: built once, kept)."""
        if adata is None or adata is self.adata:
            if self._graph is None:
                self._graph = CellGraph(self._neighbors())
            return self._graph
        manager = self.get_anndata_manager(adata, required=True)
        return CellGraph(manager.get_from_registry(REGISTRY_KEYS.NEIGHBORS_KEY))

    # ---- training -------------------------------------------------------------------------------
    @abstractmethod
    def _stages(self) -> tuple[Stage, ...]:
        """The model's training stages in order, as this model's settings make them."""

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The training stages :meth:`train` runs, in order (their names select stages to run)."""
        return self._stages()

    def _batch_inputs(self, batches: BatchKind) -> dict:
        """What the data module needs to build a kind of minibatch from the registered data."""
        if batches == "neighbor_pairs":
            return {"neighbors": self._neighbors()}
        if batches == "subgraphs":
            partitions = self.adata_manager.get_from_registry(REGISTRY_KEYS.PARTITION_KEY)
            return {"partitions": np.asarray(partitions).ravel(), "graph": self._cell_graph()}
        return {}

    def _select_stages(self, stages: str | Sequence[str] | None) -> list[Stage]:
        """The requested stages in training order (default: all)."""
        available = {stage.name: stage for stage in self._stages()}
        if stages is None:
            return list(available.values())
        names = [stages] if isinstance(stages, str) else list(stages)
        unknown = [s for s in names if s not in available]
        if unknown:
            raise ValueError(f"Unknown stage(s) {unknown}: this {type(self).__name__} has {list(available)}.")
        return [stage for name, stage in available.items() if name in names]

    def train(
        self,
        max_epochs: int | None = None,
        stages: str | Sequence[str] | None = None,
        batch_size: int | None = None,
        lr: float = 1e-3,
        cluster_lr: float = 1e-4,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool = True,
        tol: float = 1e-3,
        cluster_init: Literal["kmeans", "leiden"] | None = None,
        plan_kwargs: dict | None = None,
        *,
        early_stopping_patience: int = 10,
        early_stopping_rel_delta: float = 1e-3,
        kmeans_n_init: int = 20,
        stage_steps: dict[str, int] | None = None,
        checkpoint_dir: str | Path | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        counts_on_device: bool | Literal["auto"] = "auto",
        datasplitter_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train the stages in order, then write the results into the AnnData.

        Each stage (:attr:`stages`; SCDMAC: ``"denoise"``, ``"mask"``, ``"cluster"``; SCDSEC:
        ``"pretrain"``, ``"cluster"``) is a Lightning fit of its own plan over minibatches of all
        cells, run by scvi-tools' runner (progress bar, ``model.history``).

        Parameters
        ----------
        max_epochs
            Epochs per stage; by default each stage gets about its budget of optimiser steps (SCDMAC:
            400 per pretraining stage, 1,000 of clustering; SCDSEC: 400 and 300), as at least 5
            epochs of pretraining (one step each on data smaller than a minibatch) and 5 to 100 of
            clustering. On large data (where 5 epochs would take over 1.5 times the budget) each of
            the 5 epochs is a random subset of the batches, so the default cost no longer grows with
            the number of cells (:meth:`~scdmac.train.Stage.default_schedule`); pass ``max_epochs`` for full
            epochs, or ``stage_steps`` for a larger budget.
        stages
            Stage or stages to run (default: all, in order). Re-running ``"cluster"`` starts again
            from centres placed on the current embedding.
        batch_size
            Cells per minibatch (default: 256 for SCDMAC; for SCDSEC about 512, in whole groups of
            ``partition_size`` cells).
        lr
            Adam learning rate of the pretraining stages.
        cluster_lr
            Adam learning rate of the clustering stage (lower: it refines a pretrained network, and a
            fresh Adam moves every weight by about the learning rate in its first steps).
        accelerator, devices
            Lightning's device choice (``"auto"`` uses a GPU when present).
        early_stopping
            Stop a pretraining stage when its loss has improved by less than
            ``early_stopping_rel_delta`` (relative) for ``early_stopping_patience`` epochs, once it
            has had its default budget of steps: the rule shortens runs longer than the default
            (``max_epochs``), never the default itself.
        tol
            The clustering stage stops when fewer than this fraction of cells change cluster between
            two refreshes of the DEC targets (DEC's criterion; labels are never consulted).
        cluster_init
            How the clustering stage places its centres (default: the model's, ``"kmeans"`` for
            SCDMAC and ``"leiden"`` for SCDSEC): ``"kmeans"`` (k-means on the embedding, the papers'
            choice) or ``"leiden"`` (means of the Leiden communities of
            the embedding's 15-NN graph, resolution searched for ``n_clusters`` communities; k-means
            when no resolution gives that many). See the method notes for when each does better.
        plan_kwargs
            Extra arguments of the training plans (:class:`~scdmac.train.StagePlan`,
            :class:`~scdmac.train.ClusterPlan`), e.g. ``weight_decay``, ``eps``, ``update_interval``,
            ``refill``, ``collapse_fraction`` or ``target_balance`` (the exponent of a cluster's size in
            DEC's target: 0.5 for SCDMAC, 1, DEC's own, for SCDSEC); each plan takes the ones it has.
        early_stopping_patience
            Epochs without improvement before a pretraining stage stops (never before this many
            epochs, nor before the stage's default budget of steps).
        early_stopping_rel_delta
            Smallest relative improvement of a pretraining loss that counts.
        kmeans_n_init
            k-means restarts when the clustering stage places its centres.
        stage_steps
            Default optimiser steps of the named stages, e.g. ``{"cluster": 500}`` (others keep theirs).
        checkpoint_dir
            Keep a checkpoint here after each finished stage (weights, history, random states). If the
            folder holds the checkpoint of an interrupted run with the same settings and data, training
            resumes after its last finished stage, to the same result as an uninterrupted run; the
            checkpoint is removed when the run completes.
        train_size, validation_size
            Shares of the cells that train and that are held out for validation, as in scvi-tools
            (default: every cell trains; clustering needs every cell, and the DEC targets always cover
            all of them). With a validation split, each stage logs ``{stage}_validation_loss`` into
            :attr:`history` (every ``check_val_every_n_epoch`` epochs, default 1), and
            ``early_stopping`` watches that loss instead of the training loss.
        shuffle_set_split
            Draw the split at random (``scvi.settings.seed``); else the first cells train.
        load_sparse_tensor
            Minibatches of counts as sparse tensors, densified on the training device (less to move to a GPU).
        counts_on_device
            Hold the registered counts on the training device and cut each minibatch there, so the
            loader moves only row numbers (:class:`~scdmac.data.DeviceCounts`). ``"auto"``: when training
            on a GPU and the in-memory counts take at most a quarter of its free memory (else the loader
            reads them, with ``datasplitter_kwargs``' workers and pinned memory); ``True``: always (on a
            CPU too; the batches are the same); ``False``: never.
        datasplitter_kwargs
            Passed to every data loader (``num_workers``, ``pin_memory``, ``persistent_workers``).
        **trainer_kwargs
            Passed to the Lightning trainer, e.g. ``strategy``, ``enable_progress_bar``,
            ``check_val_every_n_epoch``, ``precision`` (default: ``"bf16-mixed"`` when training on a
            CPU with AMX, where it is faster, else ``"32-true"``; pass ``precision="32-true"`` for
            float32 throughout).

        Notes
        -----
        ``early_stopping`` here is each pretraining stage's plateau rule: on by default, it ends a
        stage early only once the stage has had its default budget of steps, so it shortens longer
        runs (``max_epochs``) and leaves the default schedule whole (scvi-tools' early stopping is
        off by default and watches the validation loss). The clustering stage has its own stopping
        rule (``tol``).
        """
        batch_size = self._default_batch_size if batch_size is None else batch_size
        check_train_args(
            max_epochs,
            batch_size,
            stages,
            early_stopping_patience,
            kmeans_n_init,
        )
        check_trainer_kwargs(trainer_kwargs)
        selected = self._select_stages(stages)
        for stage in selected:
            self.module.check_stage(stage.name)
        # scvi-tools' checks of the split sizes, before any training
        validates = len(split_cells(self.adata.n_obs, train_size, validation_size)[1]) > 0
        cluster_init = cluster_init or self._cluster_init
        if cluster_init not in ("kmeans", "leiden"):
            raise ValueError(f"cluster_init must be 'kmeans' or 'leiden', not {cluster_init!r}.")
        steps = dict(stage_steps or {})
        if set(steps) - {stage.name for stage in selected}:
            raise ValueError(
                f"stage_steps names {sorted(set(steps) - {s.name for s in selected})}, which this run does not "
                f"train: choose from {[s.name for s in selected]}."
            )
        check_counts_on_device(counts_on_device)
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        # one object for every stage: its copy on the device is made once, on first use; it refuses
        # counts backed on disk, which "auto" leaves to the loader
        wants_device = counts_on_device is True or (counts_on_device == "auto" and in_memory(counts))
        device_counts = DeviceCounts(counts) if wants_device else None
        plan_kwargs = dict(plan_kwargs or {})
        # the clustering plan is a stage plan too: it takes both plans' arguments
        stage_args = _plan_args(StagePlan)
        cluster_args = stage_args | _plan_args(ClusterPlan)
        unknown = set(plan_kwargs) - cluster_args
        if unknown:
            raise ValueError(f"Unknown plan_kwargs {sorted(unknown)}: the plans take {sorted(cluster_args)}.")
        # checked now, not when the clustering stage begins after pretraining
        ClusterPlan.check_settings(plan_kwargs, name="plan_kwargs[{!r}]")
        if checkpoint_dir is not None and Path(checkpoint_dir).exists() and not Path(checkpoint_dir).is_dir():
            raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} is a file: pass a folder for the checkpoint.")
        given = trainer_kwargs.pop("callbacks", None) or []
        user_callbacks = [given] if isinstance(given, Callback) else list(given)  # Lightning takes one or a list
        trainer_kwargs.setdefault("precision", default_precision(accelerator))
        check_precision(trainer_kwargs["precision"])
        n_obs = self.adata.n_obs
        self._reference_cache = None  # what new cells are placed on changes with the weights
        split = {
            "train_size": train_size,
            "validation_size": validation_size,
            "shuffle_set_split": shuffle_set_split,
            "load_sparse_tensor": load_sparse_tensor,
            "device_counts": device_counts,
            "counts_on_device": counts_on_device,
            **(datasplitter_kwargs or {}),
        }
        plan: StagePlan | None = None
        finished: list[str] = []
        if checkpoint_dir is not None:
            run = self._run_description(selected, locals())
            state = read_checkpoint(checkpoint_dir, run)
            if state is not None:
                self.module.load_state_dict(state["module"])
                self.history_, finished = state["history"], state["finished"]
                logger.info("Resuming %s after stage(s) %s.", type(self).__name__, finished)
        # whole-graph passes over unchanged weights may be reused within this call (SCDSEC._whole_graph_embedding)
        self._pass_cache = {}
        try:
            for stage in selected:
                if stage.name in finished:
                    continue
                if stage.name in steps:
                    stage = replace(stage, steps=steps[stage.name])
                epochs, batches_per_epoch = stage.default_schedule(n_obs, batch_size)
                budget_epochs = epochs
                stage_trainer_kwargs = dict(trainer_kwargs)
                if max_epochs is not None:
                    epochs = max_epochs
                elif batches_per_epoch is not None:
                    # large data: epochs of a random subset of the batches keep the default step budget
                    stage_trainer_kwargs.setdefault("limit_train_batches", batches_per_epoch)
                callbacks = list(user_callbacks)
                monitor = f"{stage.name}_validation_loss" if validates else f"{stage.name}_loss"
                if stage.clustering:
                    self._init_clusters(self.init_params_["non_kwargs"]["n_clusters"], cluster_init, kmeans_n_init)
                    args = {k: v for k, v in plan_kwargs.items() if k in cluster_args}
                    args.setdefault("seed", _seed())
                    args.setdefault("target_balance", self._target_balance)
                    plan = ClusterPlan(self.module, stage, self._embed_all, tol=tol, lr=cluster_lr, **args)
                else:
                    args = {k: v for k, v in plan_kwargs.items() if k in stage_args}
                    plan = StagePlan(self.module, stage, lr=lr, **args)
                    if early_stopping:
                        # an epoch of small data is one noisy step, and ten of them are no plateau: the rule
                        # only ends a stage that has had its budget of steps (method notes, "The step budget
                        # on small data"); it never stops before `patience` epochs in any case
                        callbacks.append(
                            RelativePlateau(
                                monitor, early_stopping_rel_delta, early_stopping_patience, min_epochs=budget_epochs
                            )
                        )
                per_epoch = stage_trainer_kwargs.get("limit_train_batches")
                logger.info(
                    "%s stage %r: up to %d epochs%s",
                    type(self).__name__,
                    stage.name,
                    epochs,
                    "" if per_epoch is None else f" of {per_epoch} batches",
                )
                self._run_stage(
                    plan, epochs, batch_size, accelerator, devices, callbacks, split, **stage_trainer_kwargs
                )
                finished.append(stage.name)
                # one writer: under a distributed strategy every rank runs this loop
                if checkpoint_dir is not None and _global_rank() == 0:
                    write_checkpoint(checkpoint_dir, run, finished, self.module.state_dict(), self.history_)
            if checkpoint_dir is not None:
                remove_checkpoint(checkpoint_dir)
            if self.module.cluster_head.n_clusters > 0:
                self.write_results()
                if isinstance(plan, ClusterPlan):  # "cluster" ran (always the last stage): its plan holds the size
                    self._warn_lost_clusters(plan.min_cluster_size)
        finally:
            self._pass_cache = None

    def _run_description(self, stages: list[Stage], train_args: dict) -> str:
        """What a checkpoint must match to be resumed: model and setup settings, data, stages, train arguments."""
        keep = (
            "max_epochs",
            "batch_size",
            "lr",
            "cluster_lr",
            "early_stopping",
            "tol",
            "cluster_init",
            "plan_kwargs",
            "early_stopping_patience",
            "early_stopping_rel_delta",
            "kmeans_n_init",
            "stage_steps",
            "train_size",
            "validation_size",
            "shuffle_set_split",
        )
        return repr(
            (
                type(self).__name__,
                self._data_fingerprint(),
                self.adata_manager.registry["setup_args"],
                self.init_params_,
                [stage.name for stage in stages],
                {k: train_args[k] for k in keep},
                str(train_args["trainer_kwargs"].get("precision")),
                settings.seed,
            )
        )

    def _data_fingerprint(self) -> tuple:
        """The training data in brief: shape, total counts, and hashes of the genes, cells and graph."""
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        total = sum(float(block.sum()) for _, block in row_chunks(counts))

        def digest(values) -> int:
            return int(pd.util.hash_pandas_object(pd.Series(np.asarray(values).ravel()), index=False).sum())

        return (
            self.adata.shape,
            total,
            digest(self.adata.var_names),
            digest(self.adata.obs_names),
            digest(self._neighbors()),
        )

    def _run_stage(
        self,
        plan: StagePlan,
        max_epochs: int,
        batch_size: int,
        accelerator: str,
        devices: int | list[int] | str,
        callbacks: list,
        split: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Fit one stage's plan over all cells with scvi-tools' runner (progress bar, history)."""
        data = CellDataModule(
            self.adata_manager,
            batch_size,
            plan.stage.batches,
            **self._batch_inputs(plan.stage.batches),
            **(split or {}),
        )
        if data.n_val:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
            trainer_kwargs.setdefault("num_sanity_val_steps", 0)
        if str(trainer_kwargs.get("strategy", "")).startswith("ddp"):
            # our sampler already splits batches across ranks
            trainer_kwargs.setdefault("use_distributed_sampler", False)
        trainer_kwargs.setdefault("enable_checkpointing", False)
        if trainer_kwargs.get("enable_progress_bar", True) and trainer_kwargs.get("simple_progress_bar", True):
            # scvi-tools' per-epoch bar, named after the stage (instead of the one scvi-tools adds)
            trainer_kwargs["simple_progress_bar"] = False
            refresh = trainer_kwargs.pop("progress_bar_refresh_rate", 1)
            callbacks = [*callbacks, StageProgressBar(plan.stage.name, refresh)]
        # before the trainer wraps the module: distributed training registers the trainable parameters
        plan.set_stage_mode()
        previous: dict | None = self.history
        was_trained = bool(getattr(self, "is_trained_", False))
        self.is_trained_ = False
        self.history_ = None
        try:
            # Lightning prints its notices when the trainer is built: keep them out from there on
            with quiet_lightning():
                runner = TrainRunner(
                    self,
                    training_plan=plan,
                    data_splitter=data,
                    max_epochs=max_epochs,
                    accelerator=accelerator,
                    devices=devices,
                    callbacks=callbacks,
                    **{"check_val_every_n_epoch": None, **trainer_kwargs},
                )
                runner()
        except BaseException:
            # a failed or interrupted stage keeps what earlier stages and trainings recorded
            self.history_, self.is_trained_ = previous, was_trained
            raise
        finally:
            plan.release_parts()
        logged, self.history_ = self.history_, _merge_history(previous, self.history_)
        # under ddp_spawn the loop ran in child processes and this trainer counted nothing: count the logged epochs
        epochs = runner.trainer.current_epoch or _epochs_logged(logged, plan.stage.name)
        ran = f"{epochs} epoch{'' if epochs == 1 else 's'}"
        if plan.stop_reason is not None:
            logger.info("Stage %r stopped after %s: %s.", plan.stage.name, ran, plan.stop_reason)
        else:
            logger.info("Stage %r ran its %s.", plan.stage.name, ran)

    def _warn_lost_clusters(self, min_size: int) -> None:
        """Say so when the data could not support every requested cluster (labels as written by train)."""
        k = self.module.cluster_head.n_clusters
        labels = self.adata.obs[self.cluster_key].astype(int).to_numpy()
        sizes = np.bincount(labels, minlength=k)
        kept = int((sizes >= min_size).sum())
        if kept < k:
            warnings.warn(
                f"{type(self).__name__} kept {kept} of the {k} clusters asked for "
                f"(cluster sizes {sizes.tolist()}): the embedding does not separate that many groups. "
                "Ask for fewer clusters, pass n_clusters=None to estimate the number, or train longer.",
                UserWarning,
                stacklevel=3,
            )

    def _collect(
        self, adata: AnnData | None, indices: Sequence[int] | None, batch_size: int | None, keys: Sequence[str]
    ) -> list[np.ndarray]:
        """The module's outputs ``keys`` (``z``, ``q``) for the cells of ``adata``, in eval mode."""
        return self._per_cell(adata, indices, batch_size, keys, lambda x, s: self.module.inference(x, sample=s))

    def _per_cell(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | np.ndarray | None,
        batch_size: int | None,
        keys: Sequence[str],
        fn: Callable[[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]],
    ) -> list[np.ndarray]:
        """Concatenate the outputs ``keys`` of ``fn(counts, sample codes)`` over minibatches of cells, in eval mode.

        The sample codes are ``None`` unless a sample is registered.
        """
        adata = self._validate_anndata(adata)
        rows = check_indices(indices, adata.n_obs)
        with_sample = REGISTRY_KEYS.BATCH_KEY in self.get_anndata_manager(adata, required=True).data_registry
        fields = [REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY] if with_sample else [REGISTRY_KEYS.X_KEY]
        loader = self._make_data_loader(
            adata=adata, indices=rows, batch_size=batch_size or 1024, data_and_attributes=fields
        )
        n_cells = adata.n_obs if rows is None else len(rows)
        # written into arrays of the final size: a list of per-batch parts joined at the end would hold
        # the output twice, and the parts, interleaved with each batch's temporaries on the heap, leave
        # memory the allocator cannot give back (at 200,000 cells: 1.9 GiB kept after the pass)
        out: dict[str, np.ndarray] = {}
        start = 0
        with self._evaluating():
            for tensors in loader:
                sample = tensors[REGISTRY_KEYS.BATCH_KEY].long().to(self.module.device) if with_sample else None
                res = fn(tensors[REGISTRY_KEYS.X_KEY].to(self.module.device), sample)
                stop = start + len(tensors[REGISTRY_KEYS.X_KEY])
                for k in keys:
                    if k not in out:
                        out[k] = np.empty((n_cells, *res[k].shape[1:]), dtype=np.float32)
                    out[k][start:stop] = res[k].cpu().numpy()
                start = stop
        if not out:  # no batch: the outputs' widths are unknown (a join of no parts failed here before too)
            raise ValueError("No cells to compute outputs for: `indices` selects none; pass at least one cell.")
        return [out[k] for k in keys]

    @contextmanager
    def _evaluating(self):
        """The module in evaluation mode, without gradients, for the block; its previous mode restored after."""
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.module.train(was_training)

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData:
        """The training data, or new cells prepared as a query (see :meth:`prepare_query`)."""
        if adata is None or adata is self.adata or self.adata_manager is None:
            return super()._validate_anndata(adata, copy_if_view)
        return self.prepare_query(adata)

    def prepare_query(self, adata: AnnData) -> AnnData:
        """Prepare new cells for this trained model: genes matched by name, the reference's setup transferred.

        Called by every method that takes ``adata``; a query needs no ``setup_anndata`` of its own.
        The query must hold raw counts where the training data had them (the same layer) for every
        training gene; genes are matched by name (reordered, extra genes ignored; missing genes: an
        error, or zero counts via :meth:`prepare_query_anndata`). With a sample registered, each query
        cell must come from one of the training samples (``obs[batch_key]``). The model is not changed.

        Added to ``adata``: scvi-tools' registry entries (``uns["_scvi_uuid"]``,
        ``uns["_scvi_manager_uuid"]`` and, with a sample, ``obs["_scvi_batch"]``).

        Parameters
        ----------
        adata
            New cells.

        Returns
        -------
        :class:`~anndata.AnnData`
            ``adata`` itself, or, when its genes differ from the training genes in order or number, a
            new AnnData with the training genes' counts that the model reads instead.
        """
        if adata.is_view:
            raise ValueError(
                "adata is a view of another AnnData: make it an AnnData of its own first, with adata = adata.copy()."
            )
        store = self._per_instance_manager_store.get(self.id, {})
        layer = self.adata_manager.registry["setup_args"].get("layer")
        fingerprint = self._query_fingerprint(adata, layer)
        # the last query's aligned copy, while the query is unchanged and the copy still registered
        last = self._query
        if last is not None and last[0] is adata and last[1] == fingerprint and self._registered(last[2], store):
            return last[2]
        if self._registered(adata, store):
            return adata
        aligned = align_genes(adata, self.adata.var_names, layer, type(self).__name__)
        # a copy of a registered AnnData carries that AnnData's uuid: give it its own before registering
        # it, but keep a uuid no other AnnData holds, which other models may have registered it under
        uuid = aligned.uns.get(_SCVI_UUID_KEY)
        holders = (store.get(uuid), self._setup_adata_manager_store.get(uuid))
        _assign_adata_uuid(aligned, overwrite=any(m is not None and m.adata is not aligned for m in holders))
        self._register_manager_for_instance(query_manager(aligned, self.adata_manager, type(self).__name__))
        self._query = (adata, fingerprint, aligned)
        return aligned

    def _query_fingerprint(self, adata: AnnData, layer: str | None) -> tuple:
        """What the aligned copy of a query was made from: its counts, genes, cells and samples.

        Replacing any of them (``adata.layers[...] = ...``, new ``var_names``, a changed sample column)
        changes the fingerprint, so the next call prepares the query anew.
        """
        counts = get_counts(adata, layer)
        batch_key = self.adata_manager.registry["setup_args"].get("batch_key")
        samples = None
        if batch_key is not None and batch_key in adata.obs:
            samples = int(pd.util.hash_pandas_object(adata.obs[batch_key], index=False).to_numpy().sum())
        return (
            id(counts),
            counts.shape,
            getattr(counts, "nnz", None),
            id(adata.var_names),
            id(adata.obs_names),
            samples,
        )

    @staticmethod
    def _registered(adata: AnnData, store: dict) -> bool:
        """Whether ``adata`` itself is registered in ``store`` under the uuid it carries."""
        manager = store.get(adata.uns.get(_SCVI_UUID_KEY))
        return manager is not None and manager.adata is adata

    @classmethod
    def prepare_query_anndata(cls, adata: AnnData, reference_model, inplace: bool = True) -> AnnData | None:
        """Pad and reorder a query's genes to the reference model's, missing genes as zero counts.

        scvi-tools' own preparation (:meth:`scvi.model.base.ArchesMixin.prepare_query_anndata`). Use it
        only when the missing genes were truly not detected: :meth:`prepare_query` otherwise refuses a
        query that lacks training genes.

        Parameters
        ----------
        adata
            The query.
        reference_model
            The trained model, or the folder it was saved to.
        inplace
            Change ``adata`` in place (default) or return a new AnnData.
        """
        return ArchesMixin.prepare_query_anndata(adata, reference_model, inplace=inplace)

    def _embed_all(self) -> torch.Tensor:
        return torch.from_numpy(self._collect(None, None, None, ["z"])[0])

    def _init_clusters(self, n_clusters: int | None, method: str = "kmeans", n_init: int = 20) -> None:
        """Centres on the pretrained embedding, in the cluster head's space; estimate their number when not given."""
        from sklearn.cluster import KMeans

        head = self.module.cluster_head
        embedding = self._embed_all().to(head.radius.device)
        seed = _seed()
        if n_clusters is None:
            # counted on directions from the embedding's own origin; the sphere is then placed for that many
            head.fit_sphere(embedding)
            n_clusters = estimate_n_clusters(head.project(embedding).cpu().numpy(), random_state=seed)
            logger.info("Estimated %d clusters from the pretrained embedding.", n_clusters)
        head.fit_sphere(embedding, n_clusters, random_state=seed)
        # centres are found where the head measures distances (directions, for metric="cosine")
        z = head.project(embedding).cpu().numpy()
        labels = None
        if method == "leiden":
            # the centres are the communities' means, which a random sample gives as well as all cells;
            # the bisection runs Leiden some ten times, too slow on a large graph
            z_start = z
            if len(z) > LEIDEN_START_CELLS:
                z_start = z[random_rows(len(z), LEIDEN_START_CELLS, seed)]
            labels = leiden_at_k(z_start, n_clusters, random_state=seed)
            if labels.max() + 1 != n_clusters:
                logger.warning(
                    "No Leiden resolution gives %d communities (closest: %d); centres from k-means instead.",
                    n_clusters,
                    labels.max() + 1,
                )
                labels = None
            else:
                centers = np.stack([z_start[labels == c].mean(0) for c in range(n_clusters)])
        if labels is None:
            km = KMeans(n_clusters, n_init=n_init, random_state=seed).fit(z)
            labels, centers = km.labels_, km.cluster_centers_
        # largest cluster first: label ids then do not depend on the partitioner's arbitrary numbering
        order = np.argsort(-np.bincount(labels, minlength=n_clusters), kind="stable")
        centers = centers[order].astype(np.float32)
        head.reset(torch.from_numpy(centers))

    # ---- outputs -------------------------------------------------------------------------------
    def _check_clustered(self) -> None:
        if self.module.cluster_head.n_clusters == 0:
            raise RuntimeError(
                f"{type(self).__name__} has no clusters yet: run model.train() (or its 'cluster' stage) first."
            )

    @torch.inference_mode()
    def get_latent_representation(
        self, adata: AnnData | None = None, indices: Sequence[int] | None = None, batch_size: int | None = None
    ) -> np.ndarray:
        """The cells' embedding.

        Parameters
        ----------
        adata
            AnnData set up like the training data (default: the training data).
        indices
            Cells to embed (default: all).
        batch_size
            Cells per forward pass.

        Returns
        -------
        :class:`numpy.ndarray`
            Cells × latent dimensions, float32.
        """
        self._check_if_trained(warn=False)
        return self._collect(adata, indices, batch_size, ["z"])[0]

    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Cluster assignments.

        Parameters
        ----------
        adata
            AnnData set up like the training data (default: the training data).
        indices
            Cells to assign (default: all).
        soft
            Return the cells × clusters soft-assignment matrix (Student's t, rows sum to one) instead
            of hard labels.
        batch_size
            Cells per forward pass.

        Returns
        -------
        :class:`numpy.ndarray`
            Integer labels ``0 … n_clusters-1`` (argmax of the soft assignment), or the soft matrix.
        """
        self._check_if_trained(warn=False)
        self._check_clustered()
        q = self._collect(adata, indices, batch_size, ["q"])[0]
        return q if soft else q.argmax(1)

    def write_results(self, adata: AnnData | None = None) -> None:
        """Write embedding, labels and soft assignments into ``adata`` under the model's keys.

        ``obsm[latent_key]`` (float32), ``obs[cluster_key]`` (categorical of the strings ``"0"`` …
        ``"k-1"``, every cluster a category even when it holds no cell) and
        ``obsm[soft_key]`` (cells × clusters). :meth:`train` calls this for the training data.

        Parameters
        ----------
        adata
            The cells to write the results of and into: the training data (``None``, the default) or
            new cells, which are mapped onto the trained model first (see :meth:`prepare_query`).
        """
        adata = self.adata if adata is None else adata
        # the outputs of a query prepared under another AnnData are written into the user's own
        z, q = self._collect(adata, None, None, ["z", "q"])
        labels = q.argmax(1)
        adata.obsm[self.latent_key] = z
        adata.obsm[self.soft_key] = q
        # every cluster is a category, even one that holds no cell: categories match the soft columns
        categories = [str(k) for k in range(q.shape[1])]
        adata.obs[self.cluster_key] = pd.Categorical(labels.astype(str), categories=categories)

    # ---- files ---------------------------------------------------------------------------------
    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_kwargs: dict | None = None,
        **anndata_write_kwargs,
    ) -> None:
        """Save the model to a folder (scvi-tools' format), with a SHA-256 checksum of the weights.

        Parameters
        ----------
        dir_path
            Folder to write (created).
        prefix
            Prefix of the file names.
        overwrite
            Replace an existing folder.
        save_anndata
            Also write the training AnnData.
        save_kwargs, **anndata_write_kwargs
            Passed to :func:`torch.save` and :meth:`anndata.AnnData.write_h5ad`.
        """
        check_save_target(dir_path)
        super().save(
            dir_path,
            prefix=prefix,
            overwrite=overwrite,
            save_anndata=save_anndata,
            save_kwargs=save_kwargs,
            **anndata_write_kwargs,
        )
        write_checksum(dir_path, prefix)

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        backup_url: str | None = None,
    ):
        """Load a model saved by :meth:`save`, after checking the folder, the checksum and the genes.

        Loading unpickles the saved file (scvi-tools' format stores more than tensors), which can run
        code: load only models from sources you trust. The checksum detects damage, not tampering.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            AnnData with exactly the training genes in the same order (default: the AnnData saved
            with the model).
        accelerator, device
            Where to put the model.
        prefix
            Prefix the files were saved with.
        backup_url
            URL to download ``model.pt`` from when the folder lacks it.

        Returns
        -------
        The loaded model.
        """
        if backup_url is None:
            path = check_saved_model(dir_path, prefix, cls.__name__)
            saved_genes = read_saved_var_names(path, cls.__name__)  # also: is it readable at all
            if adata is not None:
                check_same_genes(adata, saved_genes)
            else:
                check_saved_anndata(dir_path, prefix, cls.__name__)
        return super().load(
            dir_path, adata=adata, accelerator=accelerator, device=device, prefix=prefix, backup_url=backup_url
        )

    def __repr__(self) -> str:
        status = "trained" if self.is_trained_ else "not trained"
        clusters = f", {self.n_clusters_} clusters" if self.n_clusters_ else ""
        return f"{self._model_summary_string}\nTraining status: {status}{clusters}"

    def _set_keys(self, latent_key: str | None, cluster_key: str | None, soft_key: str | None) -> None:
        self.latent_key = latent_key or f"X_{self._prefix}"
        self.cluster_key = cluster_key or f"{self._prefix}_cluster"
        self.soft_key = soft_key or f"{self._prefix}_soft"

    def _init_common(self, adata: AnnData, n_clusters: int | None, keys: tuple) -> None:
        check_n_clusters(n_clusters, adata.n_obs)
        self._graph = None
        self._set_keys(*keys)

    @property
    def n_clusters_(self) -> int | None:
        """Number of clusters of the trained model (given or estimated); ``None`` before clustering.

        It is the number of the cluster head's centres, so a saved model carries it in its weights.
        """
        return self.module.cluster_head.n_clusters or None

    def _get_user_attributes(self):
        # scvi-tools saves attributes ending in "_" and sets them again on load; n_clusters_ is read
        # from the centres (the weights), so it is neither saved nor set
        return [(name, value) for name, value in super()._get_user_attributes() if name != "n_clusters_"]

"""What both deep-clustering models share: registration, staged training, outputs and cluster numbers."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import settings
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField, ObsmField
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from .._constants import REGISTRY_KEYS
from ..data._graph import knn, partition_cells
from ..data._loaders import CellDataModule
from ..data._preprocess import highly_variable_genes, library_size, log_normalize, pca
from ..data._validate import check_counts, check_n_clusters, check_n_neighbors, get_counts
from ..train import ClusterPlan, RelativePlateau, StagePlan
from ._n_clusters import estimate_n_clusters, leiden_at_k

logger = logging.getLogger(__name__)


def _seed() -> int:
    """The seed of every random choice outside torch (k-means, Leiden, splits): ``scvi.settings.seed``."""
    return int(settings.seed) if settings.seed is not None else 0


def default_epochs(n_obs: int, batch_size: int, target_steps: int, lo: int, hi: int) -> int:
    """Epochs giving about ``target_steps`` optimiser steps, within ``[lo, hi]``."""
    steps_per_epoch = max(1, int(np.ceil(n_obs / batch_size)))
    return int(np.clip(round(target_steps / steps_per_epoch), lo, hi))


def _merge_history(old: dict | None, new: dict | None) -> dict:
    """Append a stage's logged metrics to the model's history, keeping keys only one of them has.

    scvi-tools' runner appends only to keys already present; stages log different losses.
    """
    merged = dict(old or {})
    for key, frame in (new or {}).items():
        if key in merged:
            frame = frame.copy()
            frame.index = np.arange(len(merged[key]), len(merged[key]) + len(frame))
            frame.index.name = merged[key].index.name
            merged[key] = pd.concat([merged[key], frame])
        else:
            merged[key] = frame
    return merged


class DeepClusteringModel(BaseModelClass):
    """Base of :class:`~scdmac.model.SCDMAC` and :class:`~scdmac.model.SCDSEC`.

    Subclasses define ``_prefix`` (the name used in AnnData keys), ``_graph_metric``, their module,
    their stages and :meth:`train`.
    """

    _prefix: str = "deep"
    _graph_metric: str = "euclidean"
    #: default optimiser steps of the clustering stage (its epochs follow from the number of cells)
    _cluster_steps: int = 1000
    #: how the clustering stage places its centres unless ``train(cluster_init=...)`` says otherwise
    _cluster_init: str = "kmeans"

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
        **kwargs,
    ) -> None:
        """Validate counts, select genes, build the kNN graph and register the fields.

        With ``partition_size``, cells are also grouped for subgraph minibatches
        (:func:`~scdmac.data.partition_cells`) and the groups registered.
        """
        counts = get_counts(adata, layer)
        check_counts(counts, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
        check_n_neighbors(n_neighbors, adata.n_obs)
        if n_top_genes < 1:
            raise ValueError(f"n_top_genes must be positive, got {n_top_genes}.")
        if partition_size is not None and partition_size < 1:
            raise ValueError(f"partition_size must be positive, got {partition_size}.")
        log_counts = log_normalize(counts)
        min_cells = max(1, int(np.ceil(gene_min_fraction * adata.n_obs)))
        hvg = highly_variable_genes(log_counts, n_top_genes, gene_min_cells=min_cells)
        pcs = pca(log_counts[:, hvg], n_pcs, random_state=0)
        indices, _ = knn(pcs, n_neighbors, metric=metric or cls._graph_metric)

        adata.var[cls.hvg_key()] = hvg
        adata.obsm[cls.neighbors_key()] = indices
        adata.obs[cls.indices_key()] = np.arange(adata.n_obs)
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            ObsmField(REGISTRY_KEYS.NEIGHBORS_KEY, cls.neighbors_key()),
            NumericalObsField(REGISTRY_KEYS.INDICES_KEY, cls.indices_key()),
        ]
        if partition_size is not None:
            adata.obs[cls.partition_key()] = partition_cells(pcs, partition_size, random_state=0)
            fields.append(NumericalObsField(REGISTRY_KEYS.PARTITION_KEY, cls.partition_key()))
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def _model_inputs(self) -> dict:
        """Gene positions and median library size for the module, from the registered data."""
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        hvg = self.adata.var[self.hvg_key()].to_numpy(dtype=bool)
        return {
            "n_input": self.summary_stats.n_vars,
            "gene_indices": np.flatnonzero(hvg),
            "median_library": float(np.median(library_size(counts))),
        }

    def _neighbors(self) -> np.ndarray:
        return np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.NEIGHBORS_KEY), dtype=np.int64)

    # ---- training -------------------------------------------------------------------------------
    def _run_stage(
        self,
        plan,
        max_epochs: int,
        batch_size: int,
        accelerator: str,
        devices,
        callbacks: list | None = None,
        neighbors: np.ndarray | None = None,
        partitions: np.ndarray | None = None,
        **trainer_kwargs,
    ) -> None:
        """Run one training plan over all cells with scvi-tools' runner (progress bar, history)."""
        data = CellDataModule(self.adata_manager, batch_size, neighbors=neighbors, partitions=partitions)
        callbacks = list(callbacks or []) + list(trainer_kwargs.pop("callbacks", []))
        if str(trainer_kwargs.get("strategy", "")).startswith("ddp"):
            # our sampler already splits batches across ranks
            trainer_kwargs.setdefault("use_distributed_sampler", False)
        trainer_kwargs.setdefault("enable_checkpointing", False)
        runner = TrainRunner(
            self,
            training_plan=plan,
            data_splitter=data,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            callbacks=callbacks,
            check_val_every_n_epoch=None,
            **trainer_kwargs,
        )
        self.module.stage_mode(plan.stage)
        previous, self.is_trained_ = self.history_, False
        self.history_ = None
        runner()
        self.history_ = _merge_history(previous, self.history_)

    def _stage_inputs(self, stage: str) -> tuple[dict, dict]:
        """Extra arguments of a stage's training plan and data module (subclasses add graph inputs)."""
        return {}, {}

    def _train_stages(
        self,
        stages: Sequence[str],
        max_epochs: int | None,
        batch_size: int,
        lr: float,
        cluster_lr: float,
        accelerator: str,
        devices,
        early_stopping: bool,
        tol: float,
        cluster_init: str | None,
        plan_kwargs: dict | None,
        pretrain_steps: int = 400,
        cluster_steps: int | None = None,
        **trainer_kwargs,
    ) -> None:
        """Run stages in order: pretraining stages with a plateau stop, ``"cluster"`` from fresh centres.

        Without ``max_epochs``, a pretraining stage gets about ``pretrain_steps`` optimiser steps
        (5 to 200 epochs) and clustering about ``cluster_steps`` (default: the class's
        ``_cluster_steps``; 5 to 100 epochs).
        """
        cluster_init = cluster_init or self._cluster_init
        if cluster_init not in ("kmeans", "leiden"):
            raise ValueError(f"cluster_init must be 'kmeans' or 'leiden', not {cluster_init!r}.")
        cluster_steps = cluster_steps or self._cluster_steps
        plan_kwargs = dict(plan_kwargs or {})
        n_obs = self.adata.n_obs
        for stage in stages:
            callbacks = []
            plan_inputs, data_inputs = self._stage_inputs(stage)
            if stage == "cluster":
                self._init_clusters(self.init_params_["non_kwargs"]["n_clusters"], cluster_init)
                epochs = max_epochs or default_epochs(n_obs, batch_size, cluster_steps, lo=5, hi=100)
                plan_kwargs.setdefault("seed", _seed())
                plan = ClusterPlan(self.module, self._embed_all, tol=tol, lr=cluster_lr, **plan_inputs, **plan_kwargs)
            else:
                epochs = max_epochs or default_epochs(n_obs, batch_size, pretrain_steps, lo=5, hi=200)
                # arguments only the clustering plan knows are not passed to the pretraining plans
                plan_args = {k: v for k, v in plan_kwargs.items() if k not in ClusterPlan.OWN_ARGS}
                plan = StagePlan(self.module, stage, lr=lr, **plan_inputs, **plan_args)
                if early_stopping:
                    callbacks.append(RelativePlateau(f"{stage}_loss"))
            logger.info("%s stage %r: up to %d epochs", type(self).__name__, stage, epochs)
            self._run_stage(plan, epochs, batch_size, accelerator, devices, callbacks, **data_inputs, **trainer_kwargs)
        if self.module.cluster_head.n_clusters > 0:
            self.write_results()
            if isinstance(plan, ClusterPlan):  # "cluster" ran (always the last stage): its plan holds the size
                self._warn_lost_clusters(plan.min_cluster_size)

    def _warn_lost_clusters(self, min_size: int) -> None:
        """Say so when the data could not support every requested cluster (labels as written by train)."""
        labels = self.adata.obs[self.cluster_key].astype(int).to_numpy()
        sizes = np.bincount(labels, minlength=self.n_clusters_)
        kept = int((sizes >= min_size).sum())
        if kept < self.n_clusters_:
            warnings.warn(
                f"{type(self).__name__} kept {kept} of the {self.n_clusters_} clusters asked for "
                f"(cluster sizes {sizes.tolist()}): the embedding does not separate that many groups. "
                "Ask for fewer clusters, pass n_clusters=None to estimate the number, or train longer.",
                UserWarning,
                stacklevel=3,
            )

    def _check_stages(self, stages: str | Sequence[str] | None, all_stages: Sequence[str]) -> list[str]:
        """Requested stages in training order (default: all)."""
        if stages is None:
            return list(all_stages)
        stages = [stages] if isinstance(stages, str) else list(stages)
        unknown = [s for s in stages if s not in all_stages]
        if unknown:
            raise ValueError(f"Unknown stage(s) {unknown}: choose from {list(all_stages)}.")
        return sorted(stages, key=list(all_stages).index)

    def _collect(
        self, adata: AnnData | None, indices, batch_size: int | None, keys: Sequence[str], fn=None
    ) -> list[np.ndarray]:
        """Concatenate outputs of ``fn(x)`` (default ``module.inference``) over cells, in eval mode."""
        fn = fn or (lambda x: self.module.inference(x))
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size or 1024, data_and_attributes=[REGISTRY_KEYS.X_KEY]
        )
        was_training = self.module.training
        self.module.eval()
        out: dict[str, list] = {k: [] for k in keys}
        with torch.inference_mode():
            for tensors in loader:
                res = fn(tensors[REGISTRY_KEYS.X_KEY].to(self.module.device))
                for k in keys:
                    out[k].append(res[k].cpu().numpy())
        self.module.train(was_training)
        return [np.concatenate(out[k]).astype(np.float32) for k in keys]

    def _embed_all(self) -> torch.Tensor:
        return torch.from_numpy(self._collect(None, None, None, ["z"])[0])

    def _init_clusters(self, n_clusters: int | None, method: str = "kmeans") -> None:
        """Centres on the pretrained embedding, in the cluster head's space; estimate their number when not given."""
        from sklearn.cluster import KMeans

        head = self.module.cluster_head
        z = torch.from_numpy(self._collect(None, None, None, ["z"])[0])
        head.fit_radius(z)
        # centres are found where the head measures distances (directions, for metric="cosine")
        z = head.project(z.to(head.radius.device)).cpu().numpy()
        seed = _seed()
        if n_clusters is None:
            n_clusters = estimate_n_clusters(z, random_state=seed)
            logger.info("Estimated %d clusters from the pretrained embedding.", n_clusters)
        labels = None
        if method == "leiden":
            labels = leiden_at_k(z, n_clusters, random_state=seed)
            if labels.max() + 1 != n_clusters:
                logger.warning(
                    "No Leiden resolution gives %d communities (closest: %d); centres from k-means instead.",
                    n_clusters,
                    labels.max() + 1,
                )
                labels = None
        if labels is None:
            km = KMeans(n_clusters, n_init=20, random_state=seed).fit(z)
            labels, centers = km.labels_, km.cluster_centers_
        else:
            centers = np.stack([z[labels == c].mean(0) for c in range(n_clusters)])
        # largest cluster first: label ids then do not depend on the partitioner's arbitrary numbering
        order = np.argsort(-np.bincount(labels, minlength=n_clusters), kind="stable")
        centers = centers[order].astype(np.float32)
        head.reset(torch.from_numpy(centers))
        self.n_clusters_ = int(n_clusters)

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

        ``obsm[latent_key]`` (float32), ``obs[cluster_key]`` (categorical of strings) and
        ``obsm[soft_key]`` (cells × clusters). :meth:`train` calls this for the training data.
        """
        adata = self._validate_anndata(adata)
        z, q = self._collect(adata, None, None, ["z", "q"])
        labels = q.argmax(1)
        adata.obsm[self.latent_key] = z
        adata.obsm[self.soft_key] = q
        adata.obs[self.cluster_key] = pd.Categorical(labels.astype(str), categories=[str(k) for k in np.unique(labels)])

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
        # set once centres exist (given or estimated); saved with the model and restored by on_load
        self.n_clusters_: int | None = None
        self._set_keys(*keys)

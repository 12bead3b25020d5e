"""SCDSEC: autoencoder and graph convolutional network fused layer by layer, with DEC clustering."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from anndata import AnnData
from scvi.utils import setup_anndata_dsp

from .._constants import REGISTRY_KEYS
from ..data._graph import CellGraph
from ..data._preprocess import log_moments
from ..module._scdsec import STAGES, SCDSECModule
from ._base import DeepClusteringModel

logger = logging.getLogger(__name__)

Stage = Literal["pretrain", "cluster"]


class SCDSEC(DeepClusteringModel):
    """Deep structure-enhanced cell clustering (scDSEC, 2025), trained on subgraph minibatches.

    The encoder fuses, layer by layer, an autoencoder branch reading each cell's expression with a
    graph convolutional branch reading its kNN neighbourhood (weight ``alpha`` on the former). From
    the embedding, a mirrored decoder models the raw counts (ZINB) and reconstructs the input (MSE),
    and an inner-product decoder reconstructs the graph's edges. Two stages, each a Lightning
    training plan:

    1. ``"pretrain"``: the three reconstruction losses;
    2. ``"cluster"``: centres from k-means on the embedding, then DEC's KL(P‖Q) added to them, until
       fewer than ``tol`` of the cells change cluster between target refreshes.

    Minibatches are groups of nearby cells (:func:`~scdmac.data.partition_cells`) with the subgraph
    they induce, so memory grows linearly with cells; outputs use the whole (sparse) graph.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_clusters
        Number of clusters; ``None`` estimates it from the pretrained embedding.
    n_latent
        Embedding dimension (paper: 10).
    hidden_widths
        Encoder widths (paper: 500, 500, 2000); the decoder mirrors them.
    alpha
        Fusion weight ``α`` of the autoencoder branch (paper: 0.5). ``1.0`` drops the GCN branch,
        ``0.0`` the autoencoder branch (the paper's "w/o GCN" and "w/o AE").
    layerwise
        Fuse at every layer; ``False`` fuses the two branches once, at the end ("w/o RE").
    dropout_rate
        Dropout on hidden layers.
    rec_weight, zinb_weight, graph_weight, cluster_weight
        Weights of the MSE, ZINB, graph and KL losses (paper: 1 each); 0 switches a term off.
    latent_key, cluster_key, soft_key
        Where :meth:`train` writes the embedding (``obsm``, default ``"X_scdsec"``), the labels
        (``obs``, default ``"scdsec_cluster"``) and the soft assignments (``obsm``, default
        ``"scdsec_soft"``).
    **module_kwargs
        Further arguments of :class:`~scdmac.module.SCDSECModule`.

    Examples
    --------
    >>> import scdmac
    >>> adata = scdmac.data.simulate(n_cells=500, n_genes=300, n_clusters=4)
    >>> scdmac.model.SCDSEC.setup_anndata(adata)
    >>> model = scdmac.model.SCDSEC(adata, n_clusters=4)
    >>> model.train(enable_progress_bar=False)  # doctest: +SKIP
    """

    _module_cls = SCDSECModule
    _prefix = "scdsec"
    _graph_metric = "euclidean"
    # the joint stage refines a pretrained embedding (the paper trains it for 50 epochs); on real data
    # k-means on the pretrained embedding and the refined labels agree closely, so it is kept short
    _cluster_steps = 300

    def __init__(
        self,
        adata: AnnData,
        n_clusters: int | None = None,
        n_latent: int = 10,
        hidden_widths: Sequence[int] = (500, 500, 2000),
        alpha: float = 0.5,
        layerwise: bool = True,
        dropout_rate: float = 0.0,
        rec_weight: float = 1.0,
        zinb_weight: float = 1.0,
        graph_weight: float = 1.0,
        cluster_weight: float = 1.0,
        latent_key: str | None = None,
        cluster_key: str | None = None,
        soft_key: str | None = None,
        **module_kwargs,
    ):
        super().__init__(adata)
        self._init_common(adata, n_clusters, (latent_key, cluster_key, soft_key))
        inputs = self._model_inputs()
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        self.module = self._module_cls(
            **inputs,
            input_moments=log_moments(counts, inputs["gene_indices"]),
            n_clusters=0,
            n_latent=n_latent,
            hidden_widths=tuple(hidden_widths),
            alpha=alpha,
            layerwise=layerwise,
            dropout_rate=dropout_rate,
            rec_weight=rec_weight,
            zinb_weight=zinb_weight,
            graph_weight=graph_weight,
            cluster_weight=cluster_weight,
            **module_kwargs,
        )
        self._graph: CellGraph | None = None
        n_genes = len(self.module.gene_indices)
        self._model_summary_string = (
            f"SCDSEC model: {n_genes} genes modelled, layers {'-'.join(map(str, hidden_widths))}-{n_latent}, "
            f"n_clusters={'estimated' if n_clusters is None else n_clusters}, alpha={alpha}, layerwise={layerwise}"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        n_top_genes: int = 1000,
        n_neighbors: int = 15,
        n_pcs: int = 50,
        gene_min_fraction: float = 0.01,
        partition_size: int = 128,
        metric: Literal["euclidean", "cosine"] = "euclidean",
        **kwargs,
    ) -> None:
        """Register raw counts, select genes, build the Euclidean kNN graph and group cells for minibatches.

        Counts are checked (finite, non-negative integers, no empty cell), log-normalised on a copy,
        genes detected in fewer than ``gene_min_fraction`` of the cells dropped, the ``n_top_genes``
        most variable of the rest selected (Scanpy's ``seurat`` flavour), and each cell's
        ``n_neighbors`` nearest cells found by Euclidean distance on ``n_pcs`` principal components.
        Cells are grouped by k-means on the same components into groups of about
        ``partition_size`` (minibatches are made of whole groups).

        Added to ``adata`` (nothing else is changed): ``var["scdsec_hvg"]`` (genes used),
        ``obsm["_scdsec_neighbors"]`` (neighbour indices), ``obs["_scdsec_indices"]`` (row numbers),
        ``obs["_scdsec_partition"]`` (minibatch groups) and scvi-tools' registry entries in ``uns``.

        Parameters
        ----------
        %(param_adata)s
        %(param_layer)s
        n_top_genes
            Number of highly variable genes modelled (paper: 1,000).
        n_neighbors
            Neighbours per cell in the kNN graph.
        n_pcs
            Principal components the graph is built on.
        gene_min_fraction
            Genes detected in fewer than this fraction of cells are not used (paper: 0.01).
        partition_size
            About this many cells per minibatch group.
        metric
            Distance of the kNN graph between principal components.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._setup(
            adata,
            layer,
            n_top_genes,
            n_neighbors,
            n_pcs,
            gene_min_fraction,
            setup_method_args,
            partition_size=partition_size,
            metric=metric,
            **kwargs,
        )

    # ---- graph inputs ---------------------------------------------------------------------------
    def _cell_graph(self, adata: AnnData | None = None) -> CellGraph:
        if adata is None or adata is self.adata:
            if self._graph is None:
                self._graph = CellGraph(self._neighbors())
            return self._graph
        manager = self.get_anndata_manager(adata, required=True)
        return CellGraph(manager.get_from_registry(REGISTRY_KEYS.NEIGHBORS_KEY))

    def _stage_inputs(self, stage: str) -> tuple[dict, dict]:
        partitions = self.adata_manager.get_from_registry(REGISTRY_KEYS.PARTITION_KEY)
        return {"graph": self._cell_graph()}, {"partitions": np.asarray(partitions).ravel()}

    def _collect(self, adata, indices, batch_size, keys, fn=None) -> list[np.ndarray]:
        """Outputs over the whole graph of ``adata`` (a cell's embedding depends on its neighbours)."""
        adata = self._validate_anndata(adata)
        x_log = torch.from_numpy(
            super()._collect(adata, None, batch_size, ["x"], fn=lambda x: {"x": self.module.expression(x)})[0]
        )
        device = self.module.device
        adj = self._cell_graph(adata).normalized(device)
        was_training = self.module.training
        self.module.eval()
        with torch.inference_mode():
            out = self.module.embed(x_log.to(device), adj)
        self.module.train(was_training)
        rows = slice(None) if indices is None else np.asarray(indices)
        return [out[k].cpu().numpy()[rows].astype(np.float32) for k in keys]

    def train(
        self,
        max_epochs: int | None = None,
        stages: Stage | Sequence[Stage] | None = None,
        batch_size: int = 512,
        lr: float = 1e-3,
        cluster_lr: float = 1e-4,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        early_stopping: bool = True,
        tol: float = 1e-3,
        cluster_init: Literal["kmeans", "leiden"] | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Pretrain, initialise centres by k-means, train jointly, then write the results into the AnnData.

        Parameters
        ----------
        max_epochs
            Epochs per stage; by default about 400 optimiser steps of pretraining (5 to 200 epochs,
            fewer when the loss plateaus) and up to about 300 steps of clustering (5 to 100 epochs).
        stages
            Stage or stages to run (default: ``"pretrain"`` then ``"cluster"``). Re-running
            ``"cluster"`` starts again from k-means on the current embedding.
        batch_size
            About this many cells per minibatch (whole groups of ``partition_size`` cells).
        lr
            Adam learning rate of pretraining.
        cluster_lr
            Adam learning rate of the joint clustering stage.
        accelerator, devices
            Lightning's device choice (``"auto"`` uses a GPU when present).
        early_stopping
            Stop pretraining when its loss improves by less than 0.1% for 10 epochs.
        tol
            Clustering stops when fewer than this fraction of cells change cluster between two
            refreshes of the DEC targets (labels are never consulted).
        cluster_init
            How the clustering stage places its centres (default: ``"kmeans"``): ``"kmeans"`` (k-means on
            the embedding, the papers' choice) or ``"leiden"`` (means of the Leiden communities of the embedding's 15-NN
            graph, resolution searched for ``n_clusters`` communities; k-means when no resolution gives
            that many). See the method notes for when each does better.
        plan_kwargs
            Extra arguments of the training plans (:class:`~scdmac.train.StagePlan`,
            :class:`~scdmac.train.ClusterPlan`).
        **trainer_kwargs
            Passed to the Lightning trainer, e.g. ``strategy``, ``enable_progress_bar``.
        """
        self._train_stages(
            self._check_stages(stages, STAGES),
            max_epochs,
            batch_size,
            lr,
            cluster_lr,
            accelerator,
            devices,
            early_stopping,
            tol,
            cluster_init,
            plan_kwargs,
            **trainer_kwargs,
        )

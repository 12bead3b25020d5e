"""SCDMAC: ZINB denoising, masked autoencoding and weighted soft k-means clustering."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.utils import setup_anndata_dsp

from ..module._scdmac import STAGES, SCDMACModule
from ._base import DeepClusteringModel

logger = logging.getLogger(__name__)

Stage = Literal["denoise", "mask", "cluster"]


class SCDMAC(DeepClusteringModel):
    """Single-cell clustering by denoising and masking learning (scDMAC, Xu et al. 2026).

    Three stages, each a Lightning training plan over minibatches of cells:

    1. ``"denoise"``: a DCA-style autoencoder reads augmented log-normalised expression (entries
       dropped, Gaussian noise, values swapped with a kNN neighbour) and models the raw counts with a
       zero-inflated negative binomial likelihood;
    2. ``"mask"``: a masked autoencoder on the denoised expression (entries replaced by the same
       gene's value in another cell), with a mask predictor and a reconstruction that weighs masked
       entries more; its encoder gives the embedding;
    3. ``"cluster"``: centres from k-means on the embedding, then weighted soft k-means plus DEC's
       KL(P‖Q) refine embedding and centres jointly, with the masked loss kept as a regulariser,
       until fewer than ``tol`` of the cells change cluster between target refreshes. Distances are
       measured between the embedding's directions (``cluster_metric="cosine"``, the geometry of the
       cosine kNN graph; ``"euclidean"`` is the papers' choice).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_clusters
        Number of clusters; ``None`` estimates it from the pretrained embedding (see
        :func:`~scdmac.model.estimate_n_clusters`). The number used is ``model.n_clusters_``.
    n_latent
        Embedding dimension.
    n_hidden
        Width of the hidden layers.
    dropout_rate
        Dropout after each hidden layer of both autoencoders; it keeps them from memorising cells
        when there are few.
    denoise
        Use the ZINB denoiser (``False``: the masked autoencoder reads log-normalised expression,
        the paper's ablation scDMAC-Z).
    mask_predictor
        Use the mask predictor (``False``: scDMAC-P).
    weighted_reconstruction
        Weigh masked entries more in the reconstruction (``False``: scDMAC-W).
    latent_key, cluster_key, soft_key
        Where :meth:`train` writes the embedding (``obsm``, default ``"X_scdmac"``), the labels
        (``obs``, default ``"scdmac_cluster"``) and the soft assignments (``obsm``, default
        ``"scdmac_soft"``).
    **module_kwargs
        Further hyperparameters of :class:`~scdmac.module.SCDMACModule` (masking ratio, loss
        weights, augmentation strengths, ``cluster_metric``, ...).

    Examples
    --------
    >>> import scdmac
    >>> adata = scdmac.data.simulate(n_cells=500, n_genes=300, n_clusters=4)
    >>> scdmac.model.SCDMAC.setup_anndata(adata)
    >>> model = scdmac.model.SCDMAC(adata, n_clusters=4)
    >>> model.train(enable_progress_bar=False)  # doctest: +SKIP
    >>> adata.obs["scdmac_cluster"]  # doctest: +SKIP
    """

    _module_cls = SCDMACModule
    _prefix = "scdmac"
    _graph_metric = "cosine"

    def __init__(
        self,
        adata: AnnData,
        n_clusters: int | None = None,
        n_latent: int = 16,
        n_hidden: int = 256,
        dropout_rate: float = 0.3,
        denoise: bool = True,
        mask_predictor: bool = True,
        weighted_reconstruction: bool = True,
        latent_key: str | None = None,
        cluster_key: str | None = None,
        soft_key: str | None = None,
        **module_kwargs,
    ):
        super().__init__(adata)
        self._init_common(adata, n_clusters, (latent_key, cluster_key, soft_key))
        self.module = self._module_cls(
            **self._model_inputs(),
            n_clusters=0,
            n_latent=n_latent,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            denoise=denoise,
            mask_predictor=mask_predictor,
            weighted_reconstruction=weighted_reconstruction,
            **module_kwargs,
        )
        n_genes = len(self.module.gene_indices)
        self._model_summary_string = (
            f"SCDMAC model: {n_genes} genes modelled, n_latent={n_latent}, "
            f"n_clusters={'estimated' if n_clusters is None else n_clusters}, denoise={denoise}, "
            f"mask_predictor={mask_predictor}, weighted_reconstruction={weighted_reconstruction}"
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        n_top_genes: int = 2000,
        n_neighbors: int = 15,
        n_pcs: int = 50,
        **kwargs,
    ) -> None:
        """Register raw counts, select genes and build the cosine kNN graph the denoiser's swaps use.

        Counts are checked (finite, non-negative integers, no empty cell), log-normalised on a copy,
        the ``n_top_genes`` most variable genes selected (Scanpy's ``seurat`` flavour; genes with no
        count are never used), and each cell's ``n_neighbors`` nearest cells found by cosine distance
        on ``n_pcs`` principal components of that matrix.

        Added to ``adata`` (nothing else is changed): ``var["scdmac_hvg"]`` (genes used),
        ``obsm["_scdmac_neighbors"]`` (neighbour indices), ``obs["_scdmac_indices"]`` (row numbers),
        and scvi-tools' registry entries in ``uns``.

        Parameters
        ----------
        %(param_adata)s
        %(param_layer)s
        n_top_genes
            Number of highly variable genes modelled (all detected genes when there are fewer).
        n_neighbors
            Neighbours per cell in the kNN graph.
        n_pcs
            Principal components the graph is built on.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._setup(adata, layer, n_top_genes, n_neighbors, n_pcs, 0.0, setup_method_args, **kwargs)

    def get_denoised_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """The ZINB denoiser's expression of the modelled genes, ``mu / s_i``.

        Counts expected at the median library size, before masking; ``np.log1p`` of it is what the
        masked autoencoder reads.

        Parameters
        ----------
        adata
            AnnData set up like the training data (default: the training data).
        indices
            Cells to return (default: all).
        batch_size
            Cells per forward pass.

        Returns
        -------
        :class:`pandas.DataFrame`
            Cells × modelled genes.
        """
        if not self.module.denoise:
            raise ValueError("This model was built with denoise=False: it has no denoiser.")
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        values = self._collect(
            adata, indices, batch_size, ["scale"], fn=lambda x: {"scale": self.module.denoised_scale(x)}
        )[0]
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        genes = adata.var_names[self.module.gene_indices.cpu().numpy()]
        return pd.DataFrame(values, index=obs_names, columns=genes)

    def _stages(self, stages: Stage | Sequence[Stage] | None) -> list[str]:
        requested = [] if stages is None else [stages] if isinstance(stages, str) else list(stages)
        if "denoise" in requested and not self.module.denoise:
            raise ValueError("This model was built with denoise=False: it has no 'denoise' stage.")
        return self._check_stages(stages, [s for s in STAGES if s != "denoise" or self.module.denoise])

    def _stage_inputs(self, stage: str) -> tuple[dict, dict]:
        # the denoiser's swap augmentation reads one kNN neighbour per cell
        if stage == "denoise" and self.module.augment["swap_rate"] > 0:
            return {"pair_neighbors": True}, {"neighbors": self._neighbors()}
        return {}, {}

    def train(
        self,
        max_epochs: int | None = None,
        stages: Stage | Sequence[Stage] | None = None,
        batch_size: int = 256,
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
        """Train the stages in order, then write the results into the AnnData.

        Parameters
        ----------
        max_epochs
            Epochs per stage; by default about 400 optimiser steps for each pretraining stage
            (5 to 200 epochs, fewer when its loss plateaus) and up to about 1,000 steps of clustering
            (5 to 100 epochs).
        stages
            Stage or stages to run (default: all, in order ``"denoise"``, ``"mask"``, ``"cluster"``).
            Re-running ``"cluster"`` starts again from k-means on the current embedding.
        batch_size
            Cells per minibatch.
        lr
            Adam learning rate of the pretraining stages.
        cluster_lr
            Adam learning rate of the clustering stage (lower: it refines a pretrained network, and a
            fresh Adam moves every weight by about the learning rate in its first steps).
        accelerator, devices
            Lightning's device choice (``"auto"`` uses a GPU when present).
        early_stopping
            Stop pretraining stages when their loss improves by less than 0.1% for 10 epochs.
        tol
            The clustering stage stops when fewer than this fraction of cells change cluster between
            two refreshes of the DEC targets (DEC's criterion; labels are never consulted).
        cluster_init
            How the clustering stage places its centres (default: ``"kmeans"``): ``"kmeans"`` (k-means on
            the embedding, the papers' choice) or ``"leiden"`` (means of the Leiden communities of the embedding's 15-NN
            graph, resolution searched for ``n_clusters`` communities; k-means when no resolution gives
            that many). See the method notes for when each does better.
        plan_kwargs
            Extra arguments of the training plans (:class:`~scdmac.train.StagePlan`,
            :class:`~scdmac.train.ClusterPlan`), e.g. ``weight_decay``, ``update_interval`` or
            ``collapse_fraction`` (end clustering, and go back one refresh, when a cluster falls below
            this share of its starting cells; off by default).
        **trainer_kwargs
            Passed to the Lightning trainer, e.g. ``strategy``, ``enable_progress_bar``.
        """
        self._train_stages(
            self._stages(stages),
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

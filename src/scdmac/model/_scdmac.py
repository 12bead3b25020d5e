"""SCDMAC: ZINB denoising, masked autoencoding and weighted soft k-means clustering."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi.utils import setup_anndata_dsp

from ..data._graph import KnnMethod
from ..data._loaders import BatchKind
from ..data._preprocess import TARGET_SUM
from ..module._scdmac import SCDMACModule
from ..train import Stage
from ._base import DeepClusteringModel

logger = logging.getLogger(__name__)


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
       cosine kNN graph; ``"euclidean"`` is the papers' choice), seen from the mean of k-means
       centres so that a type holding most cells is not cut (:meth:`~scdmac.module.ClusterHead.fit_sphere`).
       DEC's target divides by the square root of each cluster's soft size, not the size itself
       (``plan_kwargs={"target_balance": 1}`` gives DEC's), so that it drains large types less.

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
    n_bottleneck
        Width of the denoiser's bottleneck.
    dropout_rate
        Dropout after each hidden layer of both autoencoders; it keeps them from memorising cells
        when there are few.
    denoise
        Use the ZINB denoiser (``False``: the masked autoencoder reads log-normalised expression,
        the paper's ablation scDMAC-Z).
    mask_predictor
        Use the mask predictor (``False``: scDMAC-P).
    weighted_reconstruction
        Weigh masked entries more in the reconstruction (``False``: scDMAC-W, equal weights).
    mask_ratio
        Probability that an entry of the masked autoencoder's input is masked.
    masked_weight
        ``λ``: weight of masked entries in the reconstruction (``1 − λ`` elsewhere).
    mask_loss_weight
        ``γ``: weight of the mask-prediction loss against the reconstruction.
    drop_rate, noise_var, swap_rate
        The denoiser's augmentations: share of entries set to zero, variance of the Gaussian noise,
        share of entries swapped with a kNN neighbour's (see :func:`~scdmac.data.augment_expression`).
    depth_decoder
        The denoiser's decoder also reads each cell's log size factor, and the denoised expression is
        decoded at the median depth for every cell.
    zinb_weight, mask_weight, kmeans_weight, cluster_weight
        ``a, b, f, t`` of the clustering objective ``a·L_zinb + b·L_mask + f·L_kmeans + t·KL(P‖Q)``
        (``a = 0``: the denoiser stays fixed while clustering).
    inflation
        Sharpening ``α`` of the soft k-means weights.
    dof
        Degrees of freedom ``ν`` of the Student's t assignment.
    cluster_metric
        Where the clustering stage measures distances: ``"cosine"`` (the embedding's directions, as
        the cosine kNN graph does) or ``"euclidean"`` (the papers' choice; see
        :class:`~scdmac.module.ClusterHead`). Euclidean distances still did better on real cells where one
        type holds a third or more of the cells, directions on the nearly balanced benchmark files and
        simulated tissue (method notes, "The sphere's centre").
    input_scaling
        How the genes of the masked autoencoder's input are weighed: ``"overall"`` (centred, one scale
        for all genes, as PCA of unscaled log expression) or ``"gene"`` (each gene divided by the
        standard deviation of its log-normalised expression over all cells and clipped at 10, as
        ``sc.pp.scale`` before PCA, so genes of rare types weigh as much as the most variable ones).
    latent_key, cluster_key, soft_key
        Where :meth:`train` writes the embedding (``obsm``, default ``"X_scdmac"``), the labels
        (``obs``, default ``"scdmac_cluster"``) and the soft assignments (``obsm``, default
        ``"scdmac_soft"``).

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
    # DEC's target divided by the square root of each cluster's size: the full size pulls cells out of a
    # type that holds half the tissue (method notes, "DEC's target with the square root of each cluster's size")
    _target_balance = 0.5

    def __init__(
        self,
        adata: AnnData,
        n_clusters: int | None = None,
        n_latent: int = 16,
        n_hidden: int = 256,
        n_bottleneck: int = 64,
        dropout_rate: float = 0.3,
        denoise: bool = True,
        mask_predictor: bool = True,
        weighted_reconstruction: bool = True,
        mask_ratio: float = 0.3,
        masked_weight: float = 0.7,
        mask_loss_weight: float = 0.65,
        drop_rate: float = 0.1,
        noise_var: float = 0.6,
        swap_rate: float = 0.2,
        depth_decoder: bool = False,
        zinb_weight: float = 0.0,
        mask_weight: float = 1.0,
        kmeans_weight: float = 0.1,
        cluster_weight: float = 1.0,
        inflation: float = 1.0,
        dof: float = 1.0,
        cluster_metric: Literal["cosine", "euclidean"] = "cosine",
        input_scaling: Literal["overall", "gene"] = "overall",
        latent_key: str | None = None,
        cluster_key: str | None = None,
        soft_key: str | None = None,
    ):
        super().__init__(adata)
        self._init_common(adata, n_clusters, (latent_key, cluster_key, soft_key))
        inputs = self._model_inputs()
        moments = self._input_moments(inputs) if input_scaling == "gene" else None
        self.module = self._module_cls(**inputs, **self._module_kwargs(locals()), input_moments=moments)
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
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        n_top_genes: int = 2000,
        n_neighbors: int = 15,
        n_pcs: int = 50,
        knn_method: KnnMethod = "auto",
        pcs_above_noise: bool = False,
        target_sum: float | None = TARGET_SUM,
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
        %(param_batch_key)s
            The sample is removed where it enters: see the method notes, "Samples and new cells".
        %(param_cat_cov_keys)s
        n_top_genes
            Number of highly variable genes modelled (all detected genes when there are fewer).
        n_neighbors
            Neighbours per cell in the kNN graph.
        n_pcs
            Principal components the graph is built on.
        knn_method
            Neighbour search: ``"exact"``, ``"approximate"`` (pynndescent) or ``"auto"`` (exact up to
            100,000 cells); see :func:`~scdmac.data.knn`.
        pcs_above_noise
            Build the graph only on the components above the noise (at most ``n_pcs``, at least 10;
            see :func:`~scdmac.data.signal_components`). Off by default for SCDMAC: on camp it changed
            little (method notes); SCDSEC's default is on.
        target_sum
            Total counts each cell is scaled to before ``log1p``, in setup and in the network's input;
            ``None``: the median library size (Scanpy's ``normalize_total`` default), which keeps less of
            a cell's sequencing depth in its log expression (method notes, "Sequencing depth in the
            embeddings").
        **kwargs
            Passed to scvi-tools' ``AnnDataManager.register_fields`` (as every scvi-tools ``setup_anndata``).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        cls._setup(
            adata,
            layer,
            n_top_genes,
            n_neighbors,
            n_pcs,
            0.0,
            setup_method_args,
            knn_method=knn_method,
            pcs_above_noise=pcs_above_noise,
            target_sum=target_sum,
            batch_key=batch_key,
            categorical_covariate_keys=categorical_covariate_keys,
            **kwargs,
        )

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
        values = self._per_cell(
            adata, indices, batch_size, ["scale"], lambda x, s: {"scale": self.module.denoised_scale(x, sample=s)}
        )[0]
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        genes = adata.var_names[self.module.gene_indices.cpu().numpy()]
        return pd.DataFrame(values, index=obs_names, columns=genes)

    def _decoded_scale(self, adata: AnnData, rows, sample: int | None, batch_size: int | None) -> np.ndarray:
        if not self.module.denoise:
            raise ValueError("This model was built with denoise=False: it has no decoder of the counts.")

        def decode(x: torch.Tensor, own: torch.Tensor | None) -> dict[str, torch.Tensor]:
            code = own if sample is None else torch.full((x.shape[0], 1), sample, dtype=torch.long, device=x.device)
            return {"scale": self.module.denoised_scale(x, cats=[code], sample=own)}

        return self._per_cell(adata, rows, batch_size, ["scale"], decode)[0]

    def _stages(self) -> tuple[Stage, ...]:
        module = self.module
        # the swap augmentation reads one kNN neighbour per cell
        pairs: BatchKind = "neighbor_pairs" if module.augment["swap_rate"] > 0 else "cells"
        joint: tuple[str, ...] = ("masked_ae", "input_norm", "cluster_head")
        if "zinb" in module.active_terms("cluster"):
            joint += ("denoiser",)  # a·L_zinb > 0: the denoiser is refined while clustering
        stages = (
            Stage("denoise", ("denoiser",), batches=pairs),
            Stage("mask", ("masked_ae", "input_norm")),
            Stage(
                "cluster",
                joint,
                batches=pairs if "denoiser" in joint else "cells",
                steps=1000,
                epochs=(5, 100),
                clustering=True,
            ),
        )
        return stages if module.denoise else stages[1:]

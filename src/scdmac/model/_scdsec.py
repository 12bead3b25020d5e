"""SCDSEC: autoencoder and graph convolutional network fused layer by layer, with DEC clustering."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi.utils import setup_anndata_dsp

from .._constants import REGISTRY_KEYS
from ..data._graph import KnnMethod
from ..data._loaders import read_rows
from ..data._preprocess import TARGET_SUM
from ..data._validate import check_indices
from ..module._scdsec import SCDSECModule
from ..train import Stage
from ._base import DeepClusteringModel
from ._placement import _Reference

logger = logging.getLogger(__name__)


class SCDSEC(DeepClusteringModel):
    """Deep structure-enhanced cell clustering (scDSEC, 2025), trained on subgraph minibatches.

    The encoder fuses, layer by layer, an autoencoder branch reading each cell's expression with a
    graph convolutional branch reading its kNN neighbourhood (weight ``alpha`` on the former). From
    the embedding, a mirrored decoder models the raw counts (ZINB) and reconstructs the input (MSE),
    and an inner-product decoder reconstructs the graph's edges. Two stages, each a Lightning
    training plan:

    1. ``"pretrain"``: the three reconstruction losses;
    2. ``"cluster"``: centres from the Leiden communities of the embedding's kNN graph (resolution
       searched for ``n_clusters`` of them; ``train(cluster_init="kmeans")`` for the paper's k-means),
       then DEC's KL(P‖Q) added to them, until fewer than ``tol`` of the cells change cluster between
       target refreshes.

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
    negative_ratio
        Random cell pairs drawn as non-edges per edge of the graph loss.
    dof
        Degrees of freedom ``ν`` of the Student's t assignment.
    cluster_metric
        Where the clustering head measures distances (see :class:`~scdmac.module.ClusterHead`).
    input_scaling
        How the encoder's input is standardised: ``"batch"`` (minibatch statistics, with running
        averages for outputs), ``"global"`` (each gene centred, all divided by one scale) or
        ``"gene"`` (each gene divided by its own standard deviation, clipped at 10, as
        ``sc.pp.scale``); the last two use statistics of all cells, fixed before training.
    latent_key, cluster_key, soft_key
        Where :meth:`train` writes the embedding (``obsm``, default ``"X_scdsec"``), the labels
        (``obs``, default ``"scdsec_cluster"``) and the soft assignments (``obsm``, default
        ``"scdsec_soft"``).

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
    _default_batch_size = 512
    # k-means splits a type that holds half the cells, graph communities do not (method notes, SCDSEC)
    _cluster_init = "leiden"

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
        negative_ratio: float = 1.0,
        dof: float = 1.0,
        cluster_metric: Literal["euclidean", "cosine"] = "euclidean",
        input_scaling: Literal["batch", "global", "gene"] = "batch",
        latent_key: str | None = None,
        cluster_key: str | None = None,
        soft_key: str | None = None,
    ):
        super().__init__(adata)
        self._init_common(adata, n_clusters, (latent_key, cluster_key, soft_key))
        inputs = self._model_inputs()
        moments = None if input_scaling == "batch" else self._input_moments(inputs)
        self.module = self._module_cls(**inputs, **self._module_kwargs(locals()), input_moments=moments)
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
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        n_top_genes: int = 1000,
        n_neighbors: int = 15,
        n_pcs: int = 50,
        pcs_above_noise: bool = True,
        gene_min_fraction: float = 0.01,
        partition_size: int = 128,
        metric: Literal["euclidean", "cosine"] = "euclidean",
        knn_method: KnnMethod = "auto",
        target_sum: float | None = TARGET_SUM,
        scale_genes: bool = False,
        **kwargs,
    ) -> None:
        """Register raw counts, select genes, build the Euclidean kNN graph and group cells for minibatches.

        Counts are checked (finite, non-negative integers, no empty cell), log-normalised on a copy,
        genes detected in fewer than ``gene_min_fraction`` of the cells dropped, the ``n_top_genes``
        most variable of the rest selected (Scanpy's ``seurat`` flavour), and each cell's
        ``n_neighbors`` nearest cells found by Euclidean distance on (at most) ``n_pcs`` principal
        components.
        Cells are grouped by k-means on the same components into groups of about
        ``partition_size`` (minibatches are made of whole groups).

        Added to ``adata`` (nothing else is changed): ``var["scdsec_hvg"]`` (genes used),
        ``obsm["_scdsec_neighbors"]`` (neighbour indices), ``obs["_scdsec_indices"]`` (row numbers),
        ``obs["_scdsec_partition"]`` (minibatch groups) and scvi-tools' registry entries in ``uns``.

        Parameters
        ----------
        %(param_adata)s
        %(param_layer)s
        %(param_batch_key)s
            The sample is removed where it enters: see the method notes, "Samples and new cells".
        %(param_cat_cov_keys)s
        n_top_genes
            Number of highly variable genes modelled (paper: 1,000).
        n_neighbors
            Neighbours per cell in the kNN graph.
        n_pcs
            Principal components the graph is built on (at most, with ``pcs_above_noise``).
        pcs_above_noise
            Keep only the components above the noise, by Gavish and Donoho's threshold on the
            singular values (at least 10; see :func:`~scdmac.data.signal_components`). Small or
            noisy data then get a graph on fewer coordinates; most real datasets keep all ``n_pcs``.
        gene_min_fraction
            Genes detected in fewer than this fraction of cells are not used (paper: 0.01).
        partition_size
            About this many cells per minibatch group.
        metric
            Distance of the kNN graph between principal components.
        knn_method
            Neighbour search: ``"exact"``, ``"approximate"`` (pynndescent) or ``"auto"`` (exact up to
            100,000 cells); see :func:`~scdmac.data.knn`.
        target_sum
            Total counts each cell is scaled to before ``log1p``, in setup and in the network's input;
            ``None``: the median library size (Scanpy's ``normalize_total`` default), which keeps less of
            a cell's sequencing depth in its log expression (method notes, "Sequencing depth in the
            embeddings").
        scale_genes
            Divide each selected gene's log expression by its standard deviation before PCA (as
            ``sc.pp.scale`` does), so that the graph weighs genes alike rather than by their variance.
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
            gene_min_fraction,
            setup_method_args,
            partition_size=partition_size,
            metric=metric,
            knn_method=knn_method,
            pcs_above_noise=pcs_above_noise,
            target_sum=target_sum,
            scale_genes=scale_genes,
            batch_key=batch_key,
            categorical_covariate_keys=categorical_covariate_keys,
            **kwargs,
        )

    def _stages(self) -> tuple[Stage, ...]:
        reconstruction = ("input_norm", "encoder", "decoder", "zinb_head", "rec_head")
        return (
            Stage("pretrain", reconstruction, batches="subgraphs"),
            # the joint stage refines a pretrained embedding (the paper trains it for 50 epochs); on real
            # data k-means on the pretrained embedding and the refined labels agree closely: kept short
            Stage(
                "cluster",
                (*reconstruction, "cluster_head"),
                batches="subgraphs",
                steps=300,
                epochs=(5, 100),
                clustering=True,
            ),
        )

    def _collect(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
        keys: Sequence[str],
    ) -> list[np.ndarray]:
        """Outputs of the training cells over their whole graph, or of new cells placed on them.

        A cell's embedding depends on its graph neighbours. For the training data they are its
        neighbours in the training graph; cells of any other AnnData (a query) take as neighbours
        their nearest training cells, found as the training graph was (same genes, components,
        metric and sample balance), and link to nothing else (:meth:`_place`).
        """
        if adata is not None and adata is not self.adata:
            return self._place(adata, indices, batch_size, keys)
        adata = self._validate_anndata(adata)
        # always computed, even when the pass is reused: its loader draws from torch's generator, and
        # skipping that draw would change every later minibatch of the training
        x_in = torch.from_numpy(self._encoder_input(adata, None, batch_size))
        with self._evaluating():
            out = self.module.with_assignment(self._whole_graph_embedding(adata, x_in))
        checked = check_indices(indices, adata.n_obs)
        rows = slice(None) if checked is None else checked
        return [out[k].cpu().numpy()[rows].astype(np.float32) for k in keys]

    def _whole_graph_embedding(self, adata: AnnData, x_in: torch.Tensor) -> torch.Tensor:
        """Embedding of every training cell over the whole graph; inside :meth:`train`, reused while the weights stand.

        A training makes several such passes, some over the weights of the one before (the
        centres' initialisation and the first targets; the last targets and the written outputs):
        the embedding is a function of the counts, the graph and the weights of the input scaling and
        encoder alone (evaluation mode, no dropout), so a pass is reused when none of those tensors
        has changed since: neither their in-place version counters (which weight loads advance) nor
        the plans' count of optimiser steps (a fused Adam step leaves the counters alone).
        """
        module = self.module
        # the count inputs' own buffers, the input scaling and the encoder: all the embedding reads
        tensors = [*module.buffers(recurse=False)]
        for part in (module.input_norm, module.encoder):
            tensors += [*part.parameters(), *part.buffers()]
        key = (module.weight_updates, *((id(t), t._version) for t in tensors))
        cache = self._pass_cache
        if cache is not None and cache.get("key") == key:
            return cache["z"]
        device = torch.device(self.device)
        z = module.embed(x_in.to(device), self._cell_graph(adata).normalized(device), assign=False)["z"]
        if cache is not None:
            cache.update(key=key, z=z)
        return z

    def _encoder_input(self, adata: AnnData, rows: np.ndarray | None, batch_size: int | None) -> np.ndarray:
        """The encoder's input (standardised, sample-centred log expression) of the cells ``rows`` of ``adata``."""
        return self._per_cell(adata, rows, batch_size, ["x"], lambda x, s: {"x": self.module.expression(x, s)})[0]

    def _decoded_scale(self, adata: AnnData, rows, sample: int | None, batch_size: int | None) -> np.ndarray:
        z = torch.from_numpy(self._collect(adata, rows, batch_size, ["z"])[0])
        n = z.shape[0]
        if sample is not None:
            codes = torch.full((n, 1), sample, dtype=torch.long)
        elif REGISTRY_KEYS.BATCH_KEY in self.adata_manager.data_registry:
            manager = self.get_anndata_manager(self._validate_anndata(adata), required=True)
            own = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
            codes = torch.from_numpy((own if rows is None else own[rows]).astype(np.int64)).view(-1, 1)
        else:
            codes = None
        device = torch.device(self.device)
        step = batch_size or 1024
        parts = []
        with self._evaluating():
            for start in range(0, n, step):
                chunk = None if codes is None else [codes[start : start + step].to(device)]
                parts.append(self.module.normalized_scale(z[start : start + step].to(device), chunk).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, len(self.module.gene_indices)), np.float32)

    def _reference(self) -> _Reference:
        """What placing new cells needs from the training cells (built on first use, kept until training)."""
        if not isinstance(self._reference_cache, _Reference):
            self._reference_cache = _Reference.build(self)
        return self._reference_cache

    def _place(
        self, adata: AnnData, indices: Sequence[int] | None, batch_size: int | None, keys: Sequence[str]
    ) -> list[np.ndarray]:
        """Outputs of query cells, each placed on its nearest training cells."""
        query = self._validate_anndata(adata)
        rows = check_indices(indices, query.n_obs)
        reference = self._reference()
        x_in = self._encoder_input(query, rows, batch_size)
        counts = self.get_anndata_manager(query, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
        if rows is not None:
            counts = sp.csr_matrix(read_rows(counts, rows))
        neighbors = reference.neighbors_of(counts, self.module.gene_indices.cpu().numpy())
        to_reference, self_weight = reference.weights(neighbors)
        device = torch.device(self.device)
        with self._evaluating():
            out = self.module.place(
                torch.from_numpy(x_in).to(device),
                to_reference.to(device),
                self_weight.to(device),
                [p.to(device) for p in reference.products],
            )
        return [out[k].cpu().numpy().astype(np.float32) for k in keys]

"""SCDSEC's network: structure-enhanced encoder, ZINB/MSE/graph decoders and the clustering head."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from .._constants import REGISTRY_KEYS
from ._fusion import FusionEncoder
from ._heads import ClusterHead, ClusteringModuleMixin, ZINBHead, zinb_nll
from ._inputs import CountInputMixin
from ._nn import ScaleNorm, Standardize, mlp

STAGES = ("pretrain", "cluster")


class SCDSECModule(CountInputMixin, ClusteringModuleMixin, BaseModuleClass):
    """Torch side of :class:`~scdmac.model.SCDSEC`.

    The encoder reads the log-normalised expression of the modelled genes and the normalised
    adjacency of the cells it is given (a minibatch's subgraph in training, the whole graph for
    outputs). A mirrored decoder gives ZINB parameters for the raw counts and a reconstruction of
    the encoder's input; an inner-product decoder scores cell pairs.

    Losses are means per gene, per cell or per pair, so that the paper's unit weights ``β`` balance
    terms of similar size: ``L = t·KL(P‖Q) + β1·MSE + β2·ZINB + β3·BCE(graph)``; pretraining leaves
    out the first term. A weight of 0 switches a term off.

    Parameters
    ----------
    n_input
        Number of genes in the registered count matrix.
    gene_indices
        Positions of the modelled genes among them.
    median_library
        Median library size over all genes.
    n_clusters
        Number of cluster centres (0 until known).
    n_latent
        Embedding dimension.
    hidden_widths
        Encoder widths; the decoder mirrors them.
    alpha
        Fusion weight of the autoencoder branch (1: no GCN branch, 0: no autoencoder branch).
    layerwise
        Fuse at every layer (off: once at the end, the paper's "w/o RE").
    dropout_rate
        Dropout on hidden layers.
    rec_weight, zinb_weight, graph_weight, cluster_weight
        ``β1, β2, β3, t``.
    negative_ratio
        Non-edges sampled per edge for the graph loss.
    dof
        Student's t degrees of freedom ``ν``.
    cluster_metric
        Where the clustering head measures distances (see :class:`~scdmac.module.ClusterHead`).
    input_scaling
        How the encoder's input is standardised: ``"global"`` centres each gene and divides all by one
        scale, ``"gene"`` divides each gene by its own standard deviation (clipped at 10, as
        ``sc.pp.scale``), both with statistics of all cells fixed before training (``input_moments``);
        ``"batch"`` uses minibatch statistics (the behaviour before 2026-12-01; biased, since a
        minibatch is a group of similar cells).
    input_moments
        Per-gene mean and variance of the log-normalised expression over all cells
        (:func:`~scdmac.data.log_moments`); needed unless ``input_scaling="batch"``.
    """

    def __init__(
        self,
        n_input: int,
        gene_indices: np.ndarray,
        median_library: float,
        n_clusters: int = 0,
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
        input_scaling: Literal["gene", "global", "batch"] = "batch",
        input_moments: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        super().__init__()
        self.n_input = n_input
        self._register_count_inputs(gene_indices, median_library)
        n_genes = len(gene_indices)
        widths = list(hidden_widths)
        if input_scaling == "batch":
            self.input_norm = ScaleNorm(n_genes)
        elif input_scaling in ("gene", "global"):
            if input_moments is None:
                raise ValueError(f"input_scaling={input_scaling!r} needs input_moments (per-gene mean, variance).")
            self.input_norm = Standardize(*input_moments, per_feature=input_scaling == "gene")
        else:
            raise ValueError(f"input_scaling must be 'gene', 'global' or 'batch', not {input_scaling!r}.")
        self.encoder = FusionEncoder(n_genes, widths, n_latent, alpha, layerwise, dropout_rate)
        self.decoder = mlp(n_latent, widths[::-1], dropout_rate, use_batch_norm=False, use_layer_norm=True)
        self.zinb_head = ZINBHead(widths[0], n_genes)
        self.rec_head = nn.Linear(widths[0], n_genes)
        self.cluster_head = ClusterHead(n_clusters, n_latent, dof=dof, metric=cluster_metric)
        self.negative_ratio = negative_ratio
        self.loss_weights = {"rec": rec_weight, "zinb": zinb_weight, "graph": graph_weight, "cluster": cluster_weight}

    # ---- forward pieces -------------------------------------------------------------------------
    def expression(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input: centred log-normalised expression of the modelled genes."""
        return self.input_norm(self.split_counts(x)[2])

    def embed(self, x_log: torch.Tensor, adj: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embedding (and soft assignment once centres exist) of cells given their expression and graph."""
        z = self.encoder(x_log, adj)
        out = {"z": z}
        if self.cluster_head.n_clusters > 0:
            out["q"] = self.cluster_head.soft_assignment(z)
        return out

    def _graph_loss(self, z: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """BCE of ``σ(z_i·z_j)`` on the batch's edges against as many random cell pairs as non-edges."""
        n_pos = edges.shape[1]
        if n_pos == 0:
            return z.sum() * 0.0
        n_neg = max(1, int(round(self.negative_ratio * n_pos)))
        # random pairs are non-edges with probability about 1 - k/batch; the rare edge among them is noise
        neg = torch.randint(z.shape[0], (2, n_neg), device=z.device)
        # index_select, not z[idx]: advanced indexing's backward accumulates repeated rows in a
        # thread-dependent order on CPU, so the same seed would not give the same network
        pos_logits = (z.index_select(0, edges[0]) * z.index_select(0, edges[1])).sum(-1)
        neg_logits = (z.index_select(0, neg[0]) * z.index_select(0, neg[1])).sum(-1)
        pos = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
        neg_loss = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
        return 0.5 * (pos + neg_loss)

    def _autoencoder_terms(self, x: torch.Tensor, graph: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        counts, size_factor, x_log = self.split_counts(x)
        x_in = self.input_norm(x_log)
        z = self.encoder(x_in, graph["adj"])
        h = self.decoder(z)
        w = self.loss_weights
        terms = {}
        if w["rec"] > 0:
            terms["rec"] = ((self.rec_head(h) - x_in) ** 2).mean(-1).mean()
        if w["zinb"] > 0:
            terms["zinb"] = zinb_nll(counts, self.zinb_head(h, size_factor)).mean() / counts.shape[1]
        if w["graph"] > 0:
            terms["graph"] = self._graph_loss(z, graph["edges"])
        return z, terms

    def _total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = {**self.loss_weights, "kl": self.loss_weights["cluster"]}
        total = sum(weights[k] * v for k, v in terms.items())
        if not torch.is_tensor(total):
            raise ValueError("Every loss term of this stage is switched off (all weights are 0).")
        return total

    # ---- stage losses ---------------------------------------------------------------------------
    @auto_move_data
    def pretrain_loss(self, x: torch.Tensor, graph: dict[str, torch.Tensor]) -> LossOutput:
        """``β1·MSE + β2·ZINB + β3·graph`` on one batch and its subgraph."""
        _, terms = self._autoencoder_terms(x, graph)
        loss = self._total(terms)
        return LossOutput(loss=loss, reconstruction_loss=loss.expand(x.shape[0]), extra_metrics=terms)

    @auto_move_data
    def cluster_loss(self, x: torch.Tensor, target: torch.Tensor, graph: dict[str, torch.Tensor]) -> LossOutput:
        """Pretraining terms plus ``t·KL(P‖Q)``; ``target`` holds the batch's rows of P."""
        z, terms = self._autoencoder_terms(x, graph)
        if self.loss_weights["cluster"] > 0:
            terms["kl"] = self.cluster_head.kl_loss(self.cluster_head.soft_assignment(z), target)
        loss = self._total(terms)
        return LossOutput(loss=loss, reconstruction_loss=loss.expand(x.shape[0]), extra_metrics=terms)

    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        """Parameters a stage optimises (the centres only in clustering)."""
        if stage == "pretrain":
            return (p for name, p in self.named_parameters() if not name.startswith("cluster_head"))
        return self.parameters()

    def stage_mode(self, stage: str) -> None:
        """Every part trains in both stages."""
        self.train()

    # ---- BaseModuleClass interface --------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor, adj: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embedding and soft assignment of the cells in ``x`` given their normalised adjacency."""
        return self.embed(self.expression(x), adj)

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {}

    def generative(self) -> dict[str, torch.Tensor]:
        return {}

    def loss(self, tensors, inference_outputs, generative_outputs, **kwargs) -> LossOutput:
        raise NotImplementedError("SCDSEC trains stage by stage: use pretrain_loss or cluster_loss.")

"""SCDSEC's network: structure-enhanced encoder, ZINB/MSE/graph decoders and the clustering head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from .._constants import BATCH_KEYS
from ..data._preprocess import TARGET_SUM
from ._fusion import FusionEncoder
from ._heads import ClusterHead, ZINBHead, zinb_nll
from ._inputs import CountInputMixin, covariate_codes
from ._nn import ScaleNorm, Standardize, bucket_linear_rows, mlp
from ._staged import StagedLossMixin


class SCDSECModule(CountInputMixin, StagedLossMixin, BaseModuleClass):
    """Torch side of :class:`~scdmac.model.SCDSEC`.

    ``inference`` reads the log-normalised expression of the modelled genes and the normalised
    adjacency of the cells it is given (a minibatch's subgraph in training, the whole graph for
    outputs) and gives the embedding and soft assignment. ``generative`` runs the mirrored decoder:
    ZINB parameters for the raw counts and a reconstruction of the encoder's input. ``loss`` adds an
    inner-product decoder's graph term.

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
    n_cat_list
        Levels of the sample and of each categorical covariate, which the mirrored decoder reads.
    sample_shift
        Each sample's shift of the mean log expression (:func:`~scdmac.data.sample_log_shift`),
        removed from the encoder's input.
    target_sum
        Total counts each cell is scaled to before ``log1p``; ``None``: the median library size.
    n_latent, hidden_widths, alpha, layerwise, dropout_rate, rec_weight, zinb_weight, graph_weight, \
cluster_weight, negative_ratio, dof, cluster_metric
        As for :class:`~scdmac.model.SCDSEC`, where the defaults live.
    input_scaling
        How the encoder's input is standardised: ``"global"`` centres each gene and divides all by one
        scale, ``"gene"`` divides each gene by its own standard deviation (clipped at 10, as
        ``sc.pp.scale``), both with statistics of all cells fixed before training (``input_moments``);
        ``"batch"`` uses minibatch statistics (biased, since a minibatch is a group of similar cells).
    input_moments
        Per-gene mean and variance of the log-normalised expression over all cells
        (:func:`~scdmac.data.log_moments`); needed unless ``input_scaling="batch"``.
    """

    def __init__(
        self,
        n_input: int,
        gene_indices: np.ndarray,
        median_library: float,
        n_cat_list: list[int] | None = None,
        sample_shift: np.ndarray | None = None,
        target_sum: float | None = TARGET_SUM,
        *,
        n_latent: int,
        hidden_widths: Sequence[int],
        alpha: float,
        layerwise: bool,
        dropout_rate: float,
        rec_weight: float,
        zinb_weight: float,
        graph_weight: float,
        cluster_weight: float,
        negative_ratio: float,
        dof: float,
        cluster_metric: Literal["euclidean", "cosine"],
        input_scaling: Literal["gene", "global", "batch"],
        input_moments: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        super().__init__()
        self.n_input = n_input
        self._register_count_inputs(gene_indices, median_library, n_cat_list, sample_shift, target_sum)
        n_genes = len(gene_indices)
        widths = list(hidden_widths)
        self.input_norm: nn.Module
        if input_scaling == "batch":
            self.input_norm = ScaleNorm(n_genes)
        elif input_scaling in ("gene", "global"):
            if input_moments is None:
                raise ValueError(f"input_scaling={input_scaling!r} needs input_moments (per-gene mean, variance).")
            self.input_norm = Standardize(*input_moments, per_feature=input_scaling == "gene")
        else:
            raise ValueError(f"input_scaling must be 'gene', 'global' or 'batch', not {input_scaling!r}.")
        self.encoder = FusionEncoder(n_genes, widths, n_latent, alpha, layerwise, dropout_rate)
        self.decoder = mlp(
            n_latent, widths[::-1], dropout_rate, use_batch_norm=False, use_layer_norm=True, n_cat_list=self.n_cat_list
        )
        self.zinb_head = ZINBHead(widths[0], n_genes)
        self.rec_head = nn.Linear(widths[0], n_genes)
        self.cluster_head = ClusterHead(0, n_latent, dof=dof, metric=cluster_metric)
        self.negative_ratio = negative_ratio
        #: each stage's loss terms and their weights, in summation order (a term of weight 0 is not computed)
        reconstruction = {"rec": rec_weight, "zinb": zinb_weight, "graph": graph_weight}
        self.stage_weights = {"pretrain": reconstruction, "cluster": {**reconstruction, "kl": cluster_weight}}
        bucket_linear_rows(self)  # minibatches vary in size (whole groups of cells)

    # ---- forward pieces -------------------------------------------------------------------------
    def expression(self, x: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's input: standardised log-normalised expression of the modelled genes."""
        return self.input_norm(self.split_counts(x, sample)[2])

    def embed(
        self, x_in: torch.Tensor, adj: torch.Tensor | Sequence[torch.Tensor], assign: bool = True
    ) -> dict[str, torch.Tensor]:
        """Embedding ``z`` of cells given their encoder input and graph, and (``assign``, once centres exist) ``q``.

        ``adj``: the normalised adjacency, whole or as row blocks (:meth:`FusionEncoder.forward`).
        """
        return self.with_assignment(self.encoder(x_in, adj), assign)

    def place(
        self,
        x_in: torch.Tensor,
        to_reference: torch.Tensor,
        self_weight: torch.Tensor,
        reference_products: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """``z`` (and ``q``) of new cells placed on fixed reference cells (:meth:`FusionEncoder.place`)."""
        return self.with_assignment(self.encoder.place(x_in, to_reference, self_weight, reference_products))

    def with_assignment(self, z: torch.Tensor, assign: bool = True) -> dict[str, torch.Tensor]:
        """``z`` and, when asked and centres exist, its soft assignment ``q``."""
        out = {"z": z}
        if assign and self.cluster_head.n_clusters > 0:
            out["q"] = self.cluster_head.soft_assignment(z)
        return out

    def normalized_scale(self, z: torch.Tensor, codes: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """The decoder's expression of the modelled genes for embeddings ``z`` (ZINB mean at the median library).

        ``codes``: the sample's and covariates' codes to decode for (see :meth:`decoder_covariates`).
        """
        return self.generative(z, torch.ones(z.shape[0], device=z.device), codes)["zinb"]["scale"]

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

    # ---- BaseModuleClass contract ----------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        return {"x": tensors[BATCH_KEYS.X], "adj": tensors[BATCH_KEYS.ADJ], "sample": tensors.get(BATCH_KEYS.BATCH)}

    @auto_move_data
    def inference(
        self, x: torch.Tensor, adj: torch.Tensor, stage: str | None = None, sample: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Embedding ``z`` (and soft assignment ``q``) of the cells in ``x`` given their normalised adjacency.

        Parameters
        ----------
        x
            Counts of the cells (all registered genes).
        adj
            Normalised adjacency of the graph among them.
        stage
            The training stage whose loss the outputs feed (``q`` only when it has the KL term);
            ``None``: outputs, with ``q`` once centres exist.
        sample
            The cells' sample codes (with a sample registered).

        Returns
        -------
        dict
            ``z``, ``q``, and the modelled ``counts``, ``size_factor`` and encoder input ``x_in``
            that the decoders' losses compare against.
        """
        counts, size_factor, x_log = self.split_counts(x, sample)
        x_in = self.input_norm(x_log)
        assign = stage is None or "kl" in self.active_terms(stage)
        return {"counts": counts, "size_factor": size_factor, "x_in": x_in, **self.embed(x_in, adj, assign)}

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {
            "z": inference_outputs["z"],
            "size_factor": inference_outputs["size_factor"],
            "cats": covariate_codes(tensors),
        }

    @auto_move_data
    def generative(
        self, z: torch.Tensor, size_factor: torch.Tensor, cats: list[torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor | dict]:
        """Mirrored decoder: ``x_rec`` (reconstruction of the encoder input) and ``zinb`` (parameters of the counts).

        ``cats``: the cells' sample and covariate codes, which the decoder reads (the average sample
        when not given).
        """
        h = self.decoder(z, *self.decoder_covariates(cats, z.shape[0], z.device))
        return {"x_rec": self.rec_head(h), "zinb": self.zinb_head(h, size_factor)}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict,
        stage: str,
        target: torch.Tensor | None = None,
    ) -> LossOutput:
        """The weighted terms of ``stage`` on one batch and its subgraph.

        Parameters
        ----------
        tensors
            The batch (its ``edges`` feed the graph term).
        inference_outputs, generative_outputs
            :meth:`inference` and :meth:`generative` on the batch.
        stage
            ``"pretrain"`` (``β1·MSE + β2·ZINB + β3·graph``) or ``"cluster"`` (those plus ``t·KL(P‖Q)``).
        target
            The batch's rows of DEC's target distribution ``P`` (clustering only).

        Returns
        -------
        :class:`~scvi.module.base.LossOutput`
            Per-cell ``rec`` and ``zinb`` (per gene) as reconstruction terms, per-cell ``kl`` in
            ``kl_local``, and batch values of every term (``graph`` is over cell pairs).
        """
        inf, gen = inference_outputs, generative_outputs
        terms = self.active_terms(stage)
        per_cell: dict[str, torch.Tensor] = {}
        batch: dict[str, torch.Tensor] = {}
        if "rec" in terms:
            per_cell["rec"] = ((gen["x_rec"] - inf["x_in"]) ** 2).mean(-1)
        if "zinb" in terms:
            nll = zinb_nll(inf["counts"], gen["zinb"])
            n_genes = inf["counts"].shape[1]
            per_cell["zinb"], batch["zinb"] = nll / n_genes, nll.mean() / n_genes
        if "graph" in terms:
            batch["graph"] = self._graph_loss(inf["z"], tensors[BATCH_KEYS.EDGES])
        if "kl" in terms:
            per_cell["kl"] = self.kl_term(inf["q"], target)
        return self.weighted_loss(stage, per_cell, {}, n_obs=inf["counts"].shape[0], batch_values=batch)

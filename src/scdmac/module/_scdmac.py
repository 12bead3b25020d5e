"""SCDMAC's network: ZINB denoiser → masked autoencoder → clustering head."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data

from .._constants import BATCH_KEYS
from ..data._augment import augment_expression, mask_with_shuffled
from ..data._preprocess import TARGET_SUM
from ._heads import ClusterHead, zinb_nll
from ._inputs import CountInputMixin, covariate_codes
from ._masked_ae import MaskedAutoencoder, masked_reconstruction_loss
from ._nn import ScaleNorm, Standardize, bucket_linear_rows
from ._staged import StagedLossMixin
from ._zinb_ae import ZINBAutoencoder


class SCDMACModule(CountInputMixin, StagedLossMixin, BaseModuleClass):
    """Torch side of :class:`~scdmac.model.SCDMAC`: inference, generative parts and each stage's loss.

    ``inference`` runs what a stage's loss terms need (:attr:`stage_weights`): the augmented input's
    bottleneck for the ZINB term, the masked input's embedding for the masked-autoencoder term, and
    the clean embedding with its soft assignment for the clustering terms (and for outputs, with no
    stage). ``generative`` decodes: ZINB parameters of the counts, the masked reconstruction and mask
    logits. ``loss`` weighs the stage's terms.

    Parameters
    ----------
    n_input
        Number of genes in the registered count matrix.
    gene_indices
        Positions of the modelled (highly variable) genes among them.
    median_library
        Median library size over all genes, for size factors ``s_i = library_i / median``.
    n_cat_list
        Levels of the sample and of each categorical covariate (registered with ``batch_key`` and
        ``categorical_covariate_keys``); the denoiser's decoder reads them, and the masked
        autoencoder reads the denoised expression of the average sample.
    sample_shift
        Each sample's shift of the mean log expression (:func:`~scdmac.data.sample_log_shift`),
        removed from the denoiser's input.
    target_sum
        Total counts each cell is scaled to before ``log1p``; ``None``: the median library size.
    n_latent, n_hidden, n_bottleneck, dropout_rate, denoise, mask_predictor, weighted_reconstruction, \
mask_ratio, masked_weight, mask_loss_weight, drop_rate, noise_var, swap_rate, depth_decoder, zinb_weight, \
mask_weight, kmeans_weight, cluster_weight, inflation, dof, cluster_metric, input_scaling
        As for :class:`~scdmac.model.SCDMAC`, where the defaults live.
    input_moments
        Per-gene mean and variance of the log-normalised expression over all cells
        (:func:`~scdmac.data.log_moments`); needed with ``input_scaling="gene"``.
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
        n_hidden: int,
        n_bottleneck: int,
        dropout_rate: float,
        denoise: bool,
        mask_predictor: bool,
        weighted_reconstruction: bool,
        mask_ratio: float,
        masked_weight: float,
        mask_loss_weight: float,
        drop_rate: float,
        noise_var: float,
        swap_rate: float,
        depth_decoder: bool,
        zinb_weight: float,
        mask_weight: float,
        kmeans_weight: float,
        cluster_weight: float,
        inflation: float,
        dof: float,
        cluster_metric: Literal["cosine", "euclidean"],
        input_scaling: Literal["overall", "gene"] = "overall",
        input_moments: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        super().__init__()
        self.n_input = n_input
        self._register_count_inputs(gene_indices, median_library, n_cat_list, sample_shift, target_sum)
        n_genes = len(gene_indices)
        self.denoiser = (
            ZINBAutoencoder(n_genes, (n_hidden, n_bottleneck), dropout_rate, self.n_cat_list, depth_decoder)
            if denoise
            else None
        )
        self.masked_ae = MaskedAutoencoder(n_genes, n_latent, (n_hidden,), mask_predictor, dropout_rate)
        # genes centred and brought to one overall scale (running statistics); scaling each gene by the
        # denoised expression's own spread would blow up the tiny residual variation the denoiser leaves
        # in genes without structure, so "gene" divides by the spread of the noisy log expression instead
        if input_scaling == "gene":
            if input_moments is None:
                raise ValueError('input_scaling="gene" needs input_moments (per-gene mean, variance).')
            self.gene_scaling: Standardize | None = Standardize(*input_moments, per_feature=True)
        elif input_scaling == "overall":
            self.gene_scaling = None
        else:
            raise ValueError(f"input_scaling must be 'overall' or 'gene', not {input_scaling!r}.")
        self.input_norm = ScaleNorm(n_genes)
        self.cluster_head = ClusterHead(0, n_latent, dof=dof, inflation=inflation, metric=cluster_metric)
        self.mask_ratio = mask_ratio
        self.masked_weight = masked_weight if weighted_reconstruction else 0.5
        self.mask_loss_weight = mask_loss_weight
        self.augment = {"drop_rate": drop_rate, "noise_var": noise_var, "swap_rate": swap_rate}
        #: each stage's loss terms and their weights; the clustering objective is
        #: ``a·L_zinb + b·L_mask + f·L_kmeans + t·KL(P‖Q)`` (a term of weight 0 is not computed)
        self.stage_weights = {
            "denoise": {"zinb": 1.0},
            "mask": {"mask": 1.0},
            "cluster": {"kl": cluster_weight, "kmeans": kmeans_weight, "mask": mask_weight, "zinb": zinb_weight},
        }
        if not denoise:
            del self.stage_weights["denoise"]
            del self.stage_weights["cluster"]["zinb"]
        bucket_linear_rows(self)  # a stage's last minibatch is smaller than the others

    @property
    def denoise(self) -> bool:
        """Whether the model has a ZINB denoiser."""
        return self.denoiser is not None

    # ---- inputs -------------------------------------------------------------------------------
    def expression(self, x: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        """The masked autoencoder's input: standardised ``log1p`` of the denoised (or normalised) expression.

        With a sample (or covariates) registered, the expression is decoded for the average sample,
        so the masked autoencoder and the clusters see no sample effect the decoder explained.
        """
        if self.denoiser is None:
            x_expr = self.split_counts(x, sample)[2]
        else:
            # the denoiser is a fixed input transform unless the clustering objective trains it
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage_weights["cluster"]["zinb"] > 0):
                x_expr = torch.log1p(self.denoised_scale(x, sample=sample))
        if self.gene_scaling is not None:
            x_expr = self.gene_scaling(x_expr)
        return self.input_norm(x_expr)

    @auto_move_data
    def denoised_scale(
        self, x: torch.Tensor, cats: list[torch.Tensor] | None = None, sample: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Denoised expression ``mu / s_i`` (counts at the median library size).

        ``cats``: the sample and covariate codes (or soft one-hots) to decode for; by default the
        average sample. ``sample``: the cells' own sample codes, for the input (with a sample registered).
        """
        _, size_factor, x_log = self.split_counts(x, sample)
        covariates = self.decoder_covariates(cats, x.shape[0], x.device)
        # decoded at the median library (size factor 1) for every cell: a decoder that reads the depth
        # then gives every cell's expression at one depth; otherwise ``scale`` does not depend on it
        return self._denoiser()(x_log, torch.ones_like(size_factor), *covariates)["scale"]

    def _denoiser(self) -> ZINBAutoencoder:
        if self.denoiser is None:
            raise ValueError("This model was built with denoise=False: it has no denoiser.")
        return self.denoiser

    # ---- BaseModuleClass contract ----------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        return {
            "x": tensors[BATCH_KEYS.X],
            "x_neighbor": tensors.get(BATCH_KEYS.X_NEIGHBOR),
            "sample": tensors.get(BATCH_KEYS.BATCH),
            "sample_neighbor": tensors.get(BATCH_KEYS.BATCH_NEIGHBOR),
        }

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        x_neighbor: torch.Tensor | None = None,
        stage: str | None = None,
        sample: torch.Tensor | None = None,
        sample_neighbor: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encoders on one batch of counts.

        Parameters
        ----------
        x
            Counts of the cells (all registered genes).
        x_neighbor
            Counts of one kNN neighbour per cell, for the denoiser's swap augmentation.
        stage
            The training stage whose loss terms the outputs feed; ``None``: the clean embedding ``z``
            and (once centres exist) the soft assignment ``q``, as used for outputs.
        sample, sample_neighbor
            Sample codes of the cells and of their neighbours (with a sample registered).

        Returns
        -------
        dict
            ``counts`` and ``size_factor`` always; ``z``, ``q`` for clustering terms and outputs;
            ``x_expr`` (the masked autoencoder's target), ``z_masked`` and ``mask`` for the masked term;
            ``h_denoise`` (the augmented input's bottleneck) for the ZINB term.
        """
        terms = self.active_terms(stage)
        counts, size_factor, x_log = self.split_counts(x, sample)
        out = {"counts": counts, "size_factor": size_factor}
        if terms - {"zinb"} or stage is None:
            out["x_expr"] = self.expression(x, sample)
        if {"kl", "kmeans"} & terms or stage is None:
            out["z"] = self.masked_ae.encode(out["x_expr"])
            if self.cluster_head.n_clusters > 0:
                out["q"] = self.cluster_head.soft_assignment(out["z"])
        if "mask" in terms:
            x_masked, out["mask"] = mask_with_shuffled(out["x_expr"], self.mask_ratio)
            out["z_masked"] = self.masked_ae.encode(x_masked)
        if "zinb" in terms:
            x_nb = None if x_neighbor is None else self.split_counts(x_neighbor, sample_neighbor)[2]
            out["h_denoise"] = self._denoiser().encode(augment_expression(x_log, x_nb, **self.augment))
        return out

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor | None]:
        return {
            "z_masked": inference_outputs.get("z_masked"),
            "h_denoise": inference_outputs.get("h_denoise"),
            "size_factor": inference_outputs["size_factor"],
            "cats": covariate_codes(tensors),
        }

    @auto_move_data
    def generative(
        self,
        size_factor: torch.Tensor,
        z_masked: torch.Tensor | None = None,
        h_denoise: torch.Tensor | None = None,
        cats: list[torch.Tensor] | None = None,
    ) -> dict:
        """Decoders: the masked autoencoder's reconstruction (``masked``) and the counts' ZINB parameters (``zinb``).

        ``cats``: the cells' sample and covariate codes, which the ZINB decoder reads (the average
        sample when not given).
        """
        out: dict = {}
        if z_masked is not None:
            out["masked"] = self.masked_ae.decode(z_masked)
        if h_denoise is not None:
            covariates = self.decoder_covariates(cats, h_denoise.shape[0], h_denoise.device)
            out["zinb"] = self._denoiser().decode(h_denoise, size_factor, *covariates)
        return out

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict,
        stage: str,
        target: torch.Tensor | None = None,
    ) -> LossOutput:
        """The weighted terms of ``stage`` on one batch.

        Parameters
        ----------
        tensors
            The batch.
        inference_outputs, generative_outputs
            :meth:`inference` and :meth:`generative` run for ``stage``.
        stage
            ``"denoise"`` (ZINB NLL of the counts given augmented input), ``"mask"`` (masked
            autoencoder) or ``"cluster"`` (``a·L_zinb + b·L_mask + f·L_kmeans + t·KL(P‖Q)``).
        target
            The batch's rows of DEC's target distribution ``P`` (clustering only).

        Returns
        -------
        :class:`~scvi.module.base.LossOutput`
            Per-cell reconstruction terms (``zinb``, ``mask``), the per-cell ``kl`` in ``kl_local``,
            and batch means of the other terms and parts in ``extra_metrics``.
        """
        inf, gen = inference_outputs, generative_outputs
        per_cell: dict[str, torch.Tensor] = {}
        extra: dict[str, torch.Tensor] = {}
        terms = self.active_terms(stage)
        if "zinb" in terms:
            per_cell["zinb"] = zinb_nll(inf["counts"], gen["zinb"])
            extra["zinb_per_gene"] = per_cell["zinb"].mean() / inf["counts"].shape[1]
        if "mask" in terms:
            parts = masked_reconstruction_loss(
                gen["masked"], inf["x_expr"], inf["mask"], self.masked_weight, self.mask_loss_weight
            )
            per_cell["mask"] = parts.pop("loss")
            extra.update({k: v.mean() for k, v in parts.items()})
        if "kmeans" in terms:
            per_cell["kmeans"] = self.cluster_head.soft_kmeans_loss(inf["z"])
        if "kl" in terms:
            per_cell["kl"] = self.kl_term(inf["q"], target)
        return self.weighted_loss(stage, per_cell, extra, n_obs=inf["counts"].shape[0])

"""SCDMAC's network: ZINB denoiser → masked autoencoder → clustering head."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from .._constants import REGISTRY_KEYS
from ..data._augment import augment_expression, mask_with_shuffled
from ._heads import ClusterHead, ClusteringModuleMixin, zinb_nll
from ._inputs import CountInputMixin
from ._masked_ae import MaskedAutoencoder
from ._nn import ScaleNorm
from ._zinb_ae import ZINBAutoencoder

STAGES = ("denoise", "mask", "cluster")


class SCDMACModule(CountInputMixin, ClusteringModuleMixin, BaseModuleClass):
    """Torch side of :class:`~scdmac.model.SCDMAC`; one loss per training stage.

    Parameters
    ----------
    n_input
        Number of genes in the registered count matrix.
    gene_indices
        Positions of the modelled (highly variable) genes among them.
    median_library
        Median library size over all genes, for size factors ``s_i = library_i / median``.
    n_clusters
        Number of cluster centres (0 until known).
    n_latent
        Embedding dimension.
    n_hidden
        Width of the hidden layers.
    dropout_rate
        Dropout after each hidden layer of both autoencoders.
    denoise
        Train the masked autoencoder on the ZINB-denoised expression (off: on log-normalised input,
        the paper's scDMAC-Z).
    mask_predictor
        Use the mask predictor (off: scDMAC-P).
    weighted_reconstruction
        Weigh masked entries by ``masked_weight`` (off: equal weights, scDMAC-W).
    mask_ratio
        Probability that an entry is masked.
    masked_weight
        ``λ``: weight of masked entries in the reconstruction.
    mask_loss_weight
        ``γ``: weight of the mask-prediction loss against the reconstruction.
    drop_rate, noise_var, swap_rate
        The denoiser's augmentations (see :func:`~scdmac.data.augment_expression`).
    zinb_weight, mask_weight, kmeans_weight, cluster_weight
        ``a, b, f, t`` of the clustering objective ``a·L_zinb + b·L_mask + f·L_kmeans + t·L_cluster``.
    inflation
        Soft k-means sharpening ``α``.
    dof
        Student's t degrees of freedom ``ν``.
    cluster_metric
        Where the clustering stage measures distances: ``"cosine"`` (the embedding's directions, as the
        cosine kNN graph does) or ``"euclidean"`` (see :class:`~scdmac.module.ClusterHead`).
    """

    def __init__(
        self,
        n_input: int,
        gene_indices: np.ndarray,
        median_library: float,
        n_clusters: int = 0,
        n_latent: int = 16,
        n_hidden: int = 256,
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
        zinb_weight: float = 0.0,
        mask_weight: float = 1.0,
        kmeans_weight: float = 0.1,
        cluster_weight: float = 1.0,
        inflation: float = 1.0,
        dof: float = 1.0,
        cluster_metric: str = "cosine",
    ):
        super().__init__()
        self.n_input = n_input
        self._register_count_inputs(gene_indices, median_library)
        n_genes = len(gene_indices)
        self.denoise = denoise
        self.denoiser = ZINBAutoencoder(n_genes, (n_hidden, 64), dropout_rate) if denoise else None
        self.masked_ae = MaskedAutoencoder(n_genes, n_latent, (n_hidden,), mask_predictor, dropout_rate)
        # genes centred and brought to one overall scale (running statistics); per-gene scaling would
        # blow up the tiny residual variation the denoiser leaves in genes without structure
        self.input_norm = ScaleNorm(n_genes)
        self.cluster_head = ClusterHead(n_clusters, n_latent, dof=dof, inflation=inflation, metric=cluster_metric)
        self.mask_ratio = mask_ratio
        self.masked_weight = masked_weight if weighted_reconstruction else 0.5
        self.mask_loss_weight = mask_loss_weight
        self.augment = {"drop_rate": drop_rate, "noise_var": noise_var, "swap_rate": swap_rate}
        self.loss_weights = {
            "zinb": zinb_weight,
            "mask": mask_weight,
            "kmeans": kmeans_weight,
            "cluster": cluster_weight,
        }

    # ---- inputs -------------------------------------------------------------------------------
    def expression(self, x: torch.Tensor) -> torch.Tensor:
        """The masked autoencoder's input: standardised ``log1p`` of the denoised (or normalised) expression."""
        _, size_factor, x_log = self.split_counts(x)
        if self.denoiser is None:
            return self.input_norm(x_log)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.loss_weights["zinb"] > 0):
            x_expr = torch.log1p(self.denoiser(x_log, size_factor)["scale"])
        return self.input_norm(x_expr)

    @auto_move_data
    def denoised_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Denoised expression ``mu / s_i`` (counts at the median library size)."""
        _, size_factor, x_log = self.split_counts(x)
        return self.denoiser(x_log, size_factor)["scale"]

    # ---- BaseModuleClass interface: the clean path used for outputs ------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embedding and (once centres exist) soft cluster assignment of unmasked cells."""
        z = self.masked_ae.encode(self.expression(x))
        out = {"z": z}
        if self.cluster_head.n_clusters > 0:
            out["q"] = self.cluster_head.soft_assignment(z)
        return out

    def _get_generative_input(self, tensors, inference_outputs) -> dict[str, torch.Tensor]:
        return {}

    def generative(self) -> dict[str, torch.Tensor]:
        return {}

    def loss(self, tensors, inference_outputs, generative_outputs, **kwargs) -> LossOutput:
        raise NotImplementedError("SCDMAC trains stage by stage: use denoise_loss, mask_loss or cluster_loss.")

    # ---- stage losses ---------------------------------------------------------------------------
    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        """Parameters a stage optimises."""
        if stage == "denoise":
            return self.denoiser.parameters()
        if stage == "mask":
            return self.masked_ae.parameters()
        params = list(self.masked_ae.parameters()) + list(self.cluster_head.parameters())
        if self.denoiser is not None and self.loss_weights["zinb"] > 0:
            params += list(self.denoiser.parameters())
        return iter(params)

    def stage_mode(self, stage: str) -> None:
        """Training mode for a stage: parts the stage does not optimise run in eval mode (no dropout)."""
        self.train()
        if stage != "denoise" and self.denoiser is not None and self.loss_weights["zinb"] == 0:
            self.denoiser.eval()

    def _zinb(self, x: torch.Tensor, x_neighbor: torch.Tensor | None) -> torch.Tensor:
        counts, size_factor, x_log = self.split_counts(x)
        x_nb = None if x_neighbor is None else self.split_counts(x_neighbor)[2]
        params = self.denoiser(augment_expression(x_log, x_nb, **self.augment), size_factor)
        return zinb_nll(counts, params)

    @auto_move_data
    def denoise_loss(self, x: torch.Tensor, x_neighbor: torch.Tensor | None = None) -> LossOutput:
        """ZINB NLL of the counts given augmented input (mean over cells; per gene in the metrics)."""
        nll = self._zinb(x, x_neighbor)
        return LossOutput(
            loss=nll.mean(),
            reconstruction_loss=nll,
            extra_metrics={"zinb_per_gene": nll.mean() / len(self.gene_indices)},
        )

    def _mask(self, x_expr: torch.Tensor) -> dict[str, torch.Tensor]:
        x_masked, mask = mask_with_shuffled(x_expr, self.mask_ratio)
        z_masked = self.masked_ae.encode(x_masked)
        return self.masked_ae.reconstruction_loss(z_masked, x_expr, mask, self.masked_weight, self.mask_loss_weight)

    @auto_move_data
    def mask_loss(self, x: torch.Tensor) -> LossOutput:
        """Masked-autoencoder loss on one batch."""
        parts = self._mask(self.expression(x))
        extra = {k: v.mean() for k, v in parts.items() if k != "loss"}
        return LossOutput(loss=parts["loss"].mean(), reconstruction_loss=parts["loss"], extra_metrics=extra)

    @auto_move_data
    def cluster_loss(self, x: torch.Tensor, target: torch.Tensor, x_neighbor: torch.Tensor | None = None) -> LossOutput:
        """``a·L_zinb + b·L_mask + f·L_kmeans + t·KL(P‖Q)`` on one batch; ``target`` holds its rows of P."""
        w = self.loss_weights
        x_expr = self.expression(x)
        z = self.masked_ae.encode(x_expr)
        q = self.cluster_head.soft_assignment(z)
        terms = {
            "kl": self.cluster_head.kl_loss(q, target),
            "kmeans": self.cluster_head.soft_kmeans_loss(z),
            "mask": self._mask(x_expr)["loss"].mean(),
        }
        loss = w["cluster"] * terms["kl"] + w["kmeans"] * terms["kmeans"] + w["mask"] * terms["mask"]
        if self.denoiser is not None and w["zinb"] > 0:
            terms["zinb"] = self._zinb(x, x_neighbor).mean()
            loss = loss + w["zinb"] * terms["zinb"]
        return LossOutput(loss=loss, reconstruction_loss=terms["mask"].expand(x.shape[0]), extra_metrics=terms)

"""Masked autoencoder with a mask predictor and mask-weighted reconstruction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._nn import ScaleNorm, mlp


class MaskedAutoencoder(nn.Module):
    """Encoder (last layer linear) → embedding; mask predictor; decoder from ``[z, predicted mask]``.

    Parameters
    ----------
    n_genes
        Number of genes.
    n_latent
        Embedding dimension.
    hidden_widths
        Hidden widths of the encoder; the decoder mirrors them.
    mask_predictor
        Predict which entries were masked and feed the prediction to the decoder (off: scDMAC-P).
    dropout_rate
        Dropout in the hidden layers.
    """

    def __init__(
        self,
        n_genes: int,
        n_latent: int = 16,
        hidden_widths: Sequence[int] = (256,),
        mask_predictor: bool = True,
        dropout_rate: float = 0.0,
    ):
        super().__init__()
        widths = list(hidden_widths)
        # fixed overall scale: clustering losses cannot shrink the embedding to lower themselves
        self.encoder = nn.Sequential(
            mlp(n_genes, widths, dropout_rate), nn.Linear(widths[-1], n_latent), ScaleNorm(n_latent)
        )
        self.mask_predictor = nn.Linear(n_latent, n_genes) if mask_predictor else None
        n_dec_in = n_latent + (n_genes if mask_predictor else 0)
        self.decoder = nn.Sequential(mlp(n_dec_in, widths[::-1], dropout_rate), nn.Linear(widths[0], n_genes))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of the input ``x``."""
        return self.encoder(x)

    def reconstruction_loss(
        self,
        z: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        masked_weight: float = 0.7,
        mask_loss_weight: float = 0.65,
    ) -> dict[str, torch.Tensor]:
        """``γ·BCE(mask) + (1−γ)·weighted MSE`` per cell, with weights ``λ`` on masked, ``1−λ`` elsewhere.

        Without a mask predictor the mask term is dropped and the reconstruction weighs one.
        """
        parts = [z]
        if self.mask_predictor is not None:
            # The predictor reads a detached embedding: its loss would otherwise pull the embedding
            # towards encoding which entries were corrupted instead of the cells' expression.
            mask_logits = self.mask_predictor(z.detach())
            parts.append(torch.sigmoid(mask_logits))
        x_hat = self.decoder(torch.cat(parts, dim=-1))
        weight = masked_weight * mask + (1.0 - masked_weight) * (1.0 - mask)
        rec = (weight * (x_hat - target) ** 2).mean(-1)
        if self.mask_predictor is None:
            return {"loss": rec, "reconstruction": rec}
        bce = F.binary_cross_entropy_with_logits(mask_logits, mask, reduction="none").mean(-1)
        return {
            "loss": mask_loss_weight * bce + (1.0 - mask_loss_weight) * rec,
            "reconstruction": rec,
            "mask_bce": bce,
        }

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

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction ``x_hat`` from an embedding, with the mask predictor's logits when there is one."""
        parts = [z]
        out = {}
        if self.mask_predictor is not None:
            # The predictor reads a detached embedding: its loss would otherwise pull the embedding
            # towards encoding which entries were corrupted instead of the cells' expression.
            out["mask_logits"] = self.mask_predictor(z.detach())
            parts.append(torch.sigmoid(out["mask_logits"]))
        out["x_hat"] = self.decoder(torch.cat(parts, dim=-1))
        return out


def masked_reconstruction_loss(
    decoded: dict[str, torch.Tensor],
    target: torch.Tensor,
    mask: torch.Tensor,
    masked_weight: float,
    mask_loss_weight: float,
) -> dict[str, torch.Tensor]:
    """``γ·BCE(mask) + (1−γ)·weighted MSE`` per cell, with weights ``λ`` on masked entries, ``1−λ`` elsewhere.

    Parameters
    ----------
    decoded
        :meth:`MaskedAutoencoder.decode` of the masked input's embedding.
    target
        The uncorrupted input.
    mask
        0/1 matrix of the masked entries.
    masked_weight
        ``λ``.
    mask_loss_weight
        ``γ``; without a mask predictor (no ``"mask_logits"``) the mask term is dropped and the
        reconstruction weighs one.

    Returns
    -------
    dict
        Per-cell ``"loss"`` and its parts ``"reconstruction"`` (and ``"mask_bce"``).
    """
    weight = masked_weight * mask + (1.0 - masked_weight) * (1.0 - mask)
    rec = (weight * (decoded["x_hat"] - target) ** 2).mean(-1)
    if "mask_logits" not in decoded:
        return {"loss": rec, "reconstruction": rec}
    bce = F.binary_cross_entropy_with_logits(decoded["mask_logits"], mask, reduction="none").mean(-1)
    return {"loss": mask_loss_weight * bce + (1.0 - mask_loss_weight) * rec, "reconstruction": rec, "mask_bce": bce}

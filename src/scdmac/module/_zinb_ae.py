"""DCA-style ZINB denoising autoencoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._heads import ZINBHead
from ._nn import mlp


class ZINBAutoencoder(nn.Module):
    """Encoder on (perturbed) log-normalised expression, decoder with ZINB heads for the raw counts.

    Parameters
    ----------
    n_genes
        Number of genes.
    encoder_widths
        Hidden widths of the encoder; the last is the bottleneck. The decoder mirrors them.
    dropout_rate
        Dropout after each hidden layer.
    n_cat_list
        Levels of the sample and covariates the decoder reads (none by default).
    depth_input
        The decoder also reads the log size factor, so depth-dependent expression (beyond the mean's
        proportionality to the library) need not be carried by the bottleneck.
    """

    def __init__(
        self,
        n_genes: int,
        encoder_widths: Sequence[int] = (256, 64),
        dropout_rate: float = 0.0,
        n_cat_list: Sequence[int] | None = None,
        depth_input: bool = False,
    ):
        super().__init__()
        widths = list(encoder_widths)
        self.encoder = mlp(n_genes, widths, dropout_rate)
        decoder_widths = widths[-2::-1] or widths
        self.depth_input = depth_input
        self.decoder = mlp(widths[-1] + int(depth_input), decoder_widths, dropout_rate, n_cat_list=n_cat_list)
        self.head = ZINBHead(decoder_widths[-1], n_genes)

    def encode(self, x_log: torch.Tensor) -> torch.Tensor:
        """Bottleneck representation of (perturbed) log-normalised expression."""
        return self.encoder(x_log)

    def decode(self, h: torch.Tensor, size_factor: torch.Tensor, *cats: torch.Tensor) -> dict[str, torch.Tensor]:
        """ZINB parameters of the counts (see :class:`~scdmac.module.ZINBHead`), given the covariates ``cats``.

        With ``depth_input``, ``scale`` is the expression decoded for a cell of ``size_factor``'s depth.
        """
        if self.depth_input:
            h = torch.cat([h, size_factor.log().unsqueeze(-1).to(h.dtype)], dim=-1)
        return self.head(self.decoder(h, *cats), size_factor)

    def forward(self, x_log: torch.Tensor, size_factor: torch.Tensor, *cats: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(x_log), size_factor, *cats)

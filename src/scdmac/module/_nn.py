"""Building blocks shared by the networks: MLP stacks from scvi-tools' ``FCLayers``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scvi.nn import FCLayers
from torch import nn


def mlp(
    n_in: int,
    widths: Sequence[int],
    dropout_rate: float = 0.0,
    use_batch_norm: bool = True,
    use_layer_norm: bool = False,
) -> nn.Sequential:
    """Stack of Linear → BatchNorm or LayerNorm → ReLU (→ Dropout) layers of the given widths."""
    layers = []
    for width in widths:
        layers.append(
            FCLayers(
                n_in,
                width,
                n_layers=1,
                dropout_rate=dropout_rate,
                use_batch_norm=use_batch_norm,
                use_layer_norm=use_layer_norm,
            )
        )
        n_in = width
    return nn.Sequential(*layers)


class ScaleNorm(nn.Module):
    """Centre an embedding and divide it by one scalar so its mean per-dimension variance is one.

    Unlike per-dimension batch norm, it keeps the dimensions' relative variances (which carry the
    structure, as in PCA) and only fixes the overall scale, so that distance-based clustering losses
    see a stable scale and cannot be lowered by shrinking the embedding. Batch statistics in
    training, running averages in evaluation.

    Parameters
    ----------
    n_features
        Embedding dimension.
    momentum
        Weight of the newest batch in the running averages.
    eps
        Added to the variance.
    """

    def __init__(self, n_features: int, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(n_features))
        self.register_buffer("running_var", torch.ones(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.training and z.shape[0] > 1:
            mean = z.mean(0)
            var = z.var(0, unbiased=False).mean()
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (z - mean) / torch.sqrt(var + self.eps)

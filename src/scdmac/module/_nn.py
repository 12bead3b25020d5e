"""Building blocks shared by the networks: MLP stacks from scvi-tools' ``FCLayers``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scvi.nn import FCLayers
from torch import nn


class CovariateSequential(nn.Sequential):
    """``FCLayers`` in sequence, each given the same categorical covariates (scvi-tools' injection)."""

    def forward(self, x: torch.Tensor, *cats: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, *cats)
        return x


def mlp(
    n_in: int,
    widths: Sequence[int],
    dropout_rate: float = 0.0,
    use_batch_norm: bool = True,
    use_layer_norm: bool = False,
    n_cat_list: Sequence[int] | None = None,
) -> CovariateSequential:
    """Stack of Linear → BatchNorm or LayerNorm → ReLU (→ Dropout) layers of the given widths.

    With ``n_cat_list`` (levels of each categorical covariate), every layer also reads the
    covariates one-hot encoded, as scVI's decoder does; call it as ``mlp(x, *codes)``.
    """
    layers = []
    for width in widths:
        layers.append(
            FCLayers(
                n_in,
                width,
                n_cat_list=list(n_cat_list) if n_cat_list else None,
                n_layers=1,
                dropout_rate=dropout_rate,
                use_batch_norm=use_batch_norm,
                use_layer_norm=use_layer_norm,
            )
        )
        n_in = width
    return CovariateSequential(*layers)


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

    running_mean: torch.Tensor
    running_var: torch.Tensor

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
            with torch.no_grad():  # running statistics stay float32 under mixed-precision autocast
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(var.detach().to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (z - mean) / torch.sqrt(var + self.eps)


class Standardize(nn.Module):
    """Centre each feature and scale by whole-data statistics fixed before training (saved with the model).

    Batch statistics would be biased where a minibatch is a group of similar cells (SCDSEC's
    subgraph batches): centring on such a batch subtracts the very profile its cells share.

    Parameters
    ----------
    mean, var
        Per-feature mean and variance over all cells.
    per_feature
        Divide each feature by its own standard deviation (as ``sc.pp.scale``), or all by one scalar
        (the root mean variance: relative variances kept, as in PCA of unscaled data).
    clip
        Standardised values are clipped to ``[-clip, clip]`` (``None``: no clipping).
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean, var, per_feature: bool = True, clip: float | None = 10.0):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32)
        var = torch.as_tensor(var, dtype=torch.float32).clamp_min(0.0)
        scale = var.sqrt() if per_feature else var.mean().sqrt().expand_as(var)
        self.register_buffer("mean", mean.clone())
        # a feature without variance is only centred (it carries no signal either way)
        self.register_buffer("scale", torch.where(scale > 1e-8, scale, torch.ones_like(scale)).clone())
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean) / self.scale
        return y if self.clip is None else y.clamp(-self.clip, self.clip)

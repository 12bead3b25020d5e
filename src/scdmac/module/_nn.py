"""Building blocks shared by the networks: MLP stacks from scvi-tools' ``FCLayers``, input scalings, linear layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scvi.nn import FCLayers
from torch import nn

#: under CPU bfloat16 autocast, linear layers multiply at row counts rounded up to a multiple of this
ROW_BUCKET = 64


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a half-precision type (as autocast's products are), else unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class BucketedLinear(nn.Linear):
    """``nn.Linear`` whose product, under CPU bfloat16 autocast, runs at a row count rounded up to :data:`ROW_BUCKET`.

    On CPU, bfloat16 matrix products go through oneDNN, which compiles a kernel the first time it
    meets a shape (several milliseconds, longer than the product itself). SCDSEC's minibatches are
    whole groups of cells, so their size changes from step to step, and without rounding nearly every
    step would compile new kernels (training then ran twice as slowly as in float32). The added rows
    are zeros and are dropped from the output, so they change neither the output nor the gradients.
    Outside CPU autocast this is ``nn.Linear``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if x.dim() == 2 and n % ROW_BUCKET and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            return super().forward(F.pad(x, (0, 0, 0, ROW_BUCKET - n % ROW_BUCKET)))[:n]
        return super().forward(x)


def bucket_linear_rows(module: nn.Module) -> nn.Module:
    """Make every ``nn.Linear`` in ``module`` a :class:`BucketedLinear` (same parameters, in place); returns ``module``.

    Applied once to a whole network, so that it also reaches the linear layers inside scvi-tools'
    ``FCLayers``. The parameters and their names are unchanged, so saved weights load either way.
    """
    for sub in module.modules():
        if type(sub) is nn.Linear:
            sub.__class__ = BucketedLinear
    return module


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
        z = full_precision(z)  # statistics and output in float32, also under mixed-precision autocast
        if self.training and z.shape[0] > 1:
            mean = z.mean(0)
            var = z.var(0, unbiased=False).mean()
            with torch.no_grad():
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

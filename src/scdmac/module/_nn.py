"""Building blocks shared by the networks: MLP stacks from scvi-tools' ``FCLayers``."""

from __future__ import annotations

from collections.abc import Sequence

from scvi.nn import FCLayers
from torch import nn


def mlp(n_in: int, widths: Sequence[int], dropout_rate: float = 0.0, use_batch_norm: bool = True) -> nn.Sequential:
    """Stack of Linear → BatchNorm → ReLU (→ Dropout) layers of the given widths."""
    layers = []
    for width in widths:
        layers.append(
            FCLayers(n_in, width, n_layers=1, dropout_rate=dropout_rate, use_batch_norm=use_batch_norm)
        )
        n_in = width
    return nn.Sequential(*layers)

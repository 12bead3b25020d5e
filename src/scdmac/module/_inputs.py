"""What both modules read from a minibatch of raw counts."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data._preprocess import TARGET_SUM


class CountInputMixin(nn.Module):
    """Gives a module its modelled genes and size factors, and splits a batch of counts over all genes.

    Library sizes use all genes (as the log-normalisation of preprocessing does); the networks see only
    the modelled genes.
    """

    gene_indices: torch.Tensor
    median_library: torch.Tensor

    def _register_count_inputs(self, gene_indices: np.ndarray, median_library: float) -> None:
        self.register_buffer("gene_indices", torch.as_tensor(np.asarray(gene_indices), dtype=torch.long))
        self.register_buffer("median_library", torch.tensor(float(median_library)))

    def split_counts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Modelled counts, size factors ``library / median`` and log-normalised expression."""
        library = x.sum(-1).clamp_min(1.0)
        counts = x[:, self.gene_indices]
        x_log = torch.log1p(counts * (TARGET_SUM / library).unsqueeze(-1))
        return counts, library / self.median_library, x_log

"""What both modules read from a minibatch: raw counts, and the sample and covariates when registered."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .._constants import BATCH_KEYS
from ..data._preprocess import TARGET_SUM


def covariate_codes(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The minibatch's sample codes, then each categorical covariate's, as ``(cells, 1)`` tensors."""
    codes = []
    if BATCH_KEYS.BATCH in tensors:
        codes.append(tensors[BATCH_KEYS.BATCH])
    if BATCH_KEYS.CAT_COVS in tensors:
        codes.extend(tensors[BATCH_KEYS.CAT_COVS].split(1, dim=1))
    return codes


class CountInputMixin(nn.Module):
    """Gives a module its modelled genes and size factors, and splits a batch of counts over all genes.

    Library sizes use all genes (as the log-normalisation of preprocessing does); the networks see only
    the modelled genes.
    """

    gene_indices: torch.Tensor
    median_library: torch.Tensor
    #: levels of the sample and of each categorical covariate the decoders read (empty: none)
    n_cat_list: list[int]

    #: ``(n_samples, n_genes)`` shift of each sample's mean log expression, or ``None``
    sample_shift: torch.Tensor | None
    #: total counts each cell is scaled to before ``log1p``; ``None``: the median library size
    target_sum: float | None

    def _register_count_inputs(
        self,
        gene_indices: np.ndarray,
        median_library: float,
        n_cat_list: list[int] | None = None,
        sample_shift: np.ndarray | None = None,
        target_sum: float | None = TARGET_SUM,
    ) -> None:
        # the median is a saved buffer: a model loaded with other cells keeps its training data's target
        self.target_sum = None if target_sum is None else float(target_sum)
        self.register_buffer("gene_indices", torch.as_tensor(np.asarray(gene_indices), dtype=torch.long))
        self.register_buffer("median_library", torch.tensor(float(median_library)))
        self.n_cat_list = list(n_cat_list or [])
        shift = None if sample_shift is None else torch.as_tensor(np.asarray(sample_shift), dtype=torch.float32)
        self.register_buffer("sample_shift", shift)

    def normalization_target(self) -> float:
        """Total counts each cell is scaled to before ``log1p``: ``target_sum``, or the median library size."""
        return float(self._target())

    def _target(self) -> torch.Tensor | float:
        # the median stays a tensor on the module's device: no device sync on every batch
        return self.median_library if self.target_sum is None else self.target_sum

    def decoder_covariates(
        self, codes: Sequence[torch.Tensor | None] | None, n_cells: int, device
    ) -> list[torch.Tensor]:
        """What a covariate-aware decoder reads: the given codes, the average sample for the others.

        ``codes`` lists the sample's codes, then each covariate's, as ``(cells, 1)`` integer tensors
        (or soft one-hots); a missing or ``None`` entry stands for the average level, every level of
        that covariate weighted ``1 / levels`` (a soft one-hot, which scvi-tools' ``FCLayers`` take as
        given): expression as if the cell came from no sample in particular, which is how sample
        effects leave the denoised expression.
        """
        given = list(codes or [])
        out = []
        for i, n in enumerate(self.n_cat_list):
            code = given[i] if i < len(given) else None
            out.append(torch.full((n_cells, n), 1.0 / n, device=device) if code is None else code)
        return out

    def split_counts(
        self, x: torch.Tensor, sample: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Modelled counts, size factors ``library / median`` and log-normalised expression.

        The expression is ``log1p`` of counts scaled to :meth:`normalization_target` per cell.

        With a sample registered (``sample_shift``), the expression of a cell of sample ``s`` is
        moved by ``-sample_shift[s]``: every sample then has the same mean profile at the encoder.
        ``sample``: the cells' sample codes, needed then.
        """
        if x.layout != torch.strided:  # a sparse minibatch (load_sparse_tensor), densified on its device
            x = x.to_dense()
        library = x.sum(-1).clamp_min(1.0)
        counts = x[:, self.gene_indices]
        x_log = torch.log1p(counts * (self._target() / library).unsqueeze(-1))
        if self.sample_shift is not None:
            if sample is None:
                raise ValueError("This module removes sample effects: pass the cells' sample codes.")
            x_log = x_log - self.sample_shift.index_select(0, sample.view(-1).long())
        return counts, library / self.median_library, x_log

"""Corruptions applied to minibatches: the denoiser's augmentations and the masked autoencoder's masking."""

from __future__ import annotations

import torch


def augment_expression(
    x: torch.Tensor,
    x_neighbor: torch.Tensor | None,
    drop_rate: float = 0.1,
    noise_var: float = 0.6,
    swap_rate: float = 0.2,
) -> torch.Tensor:
    """Perturb log-normalised expression the three ways scDMAC's denoiser is trained against.

    Parameters
    ----------
    x
        Cells × genes, log-normalised.
    x_neighbor
        The same cells' kNN neighbours (row ``i`` is a neighbour of cell ``i``), or ``None``.
    drop_rate
        Fraction of entries set to zero (simulated dropout).
    noise_var
        Variance of the additive Gaussian noise, on the log scale.
    swap_rate
        Fraction of entries replaced by the neighbour's value.

    Returns
    -------
    :class:`torch.Tensor`
        The perturbed expression, of ``x``'s shape (``x`` itself when no perturbation applies).
    """
    out = x
    if swap_rate > 0 and x_neighbor is not None:
        out = torch.where(torch.rand_like(x) < swap_rate, x_neighbor, out)
    if noise_var > 0:
        out = out + torch.randn_like(x) * noise_var**0.5
    if drop_rate > 0:
        out = out.masked_fill(torch.rand_like(x) < drop_rate, 0.0)
    return out


def mask_with_shuffled(x: torch.Tensor, mask_ratio: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random subset of entries by the same gene's value in another cell of the batch.

    Parameters
    ----------
    x
        Cells × genes.
    mask_ratio
        Masking probability, one value or one per gene.

    Returns
    -------
    x_masked, mask
        The corrupted matrix and the 0/1 mask of replaced entries.
    """
    # Shuffling each gene's column keeps its marginal distribution, so masked entries are plausible values.
    perm = torch.argsort(torch.rand_like(x), dim=0)
    shuffled = torch.gather(x, 0, perm)
    p = torch.as_tensor(mask_ratio, dtype=x.dtype, device=x.device).expand_as(x)
    mask = torch.bernoulli(p)
    return mask * shuffled + (1 - mask) * x, mask

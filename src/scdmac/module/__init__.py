"""Torch networks (scvi-tools ``BaseModuleClass`` modules and their parts)."""

from ._heads import ClusterHead, ZINBHead, target_distribution, zinb_nll
from ._masked_ae import MaskedAutoencoder
from ._scdmac import SCDMACModule
from ._zinb_ae import ZINBAutoencoder

__all__ = [
    "ClusterHead",
    "MaskedAutoencoder",
    "SCDMACModule",
    "ZINBAutoencoder",
    "ZINBHead",
    "target_distribution",
    "zinb_nll",
]

"""Torch networks (scvi-tools ``BaseModuleClass`` modules and their parts)."""

from ._fusion import FusionEncoder
from ._heads import ClusterHead, ZINBHead, target_distribution, zinb_nll
from ._masked_ae import MaskedAutoencoder
from ._scdmac import SCDMACModule
from ._scdsec import SCDSECModule
from ._zinb_ae import ZINBAutoencoder

__all__ = [
    "ClusterHead",
    "FusionEncoder",
    "MaskedAutoencoder",
    "SCDMACModule",
    "SCDSECModule",
    "ZINBAutoencoder",
    "ZINBHead",
    "target_distribution",
    "zinb_nll",
]

"""User-facing models."""

from ._base import DeepClusteringModel
from ._n_clusters import estimate_n_clusters
from ._scdmac import SCDMAC
from ._scdsec import SCDSEC

__all__ = ["SCDMAC", "SCDSEC", "DeepClusteringModel", "estimate_n_clusters"]

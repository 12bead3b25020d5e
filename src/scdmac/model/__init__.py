"""User-facing models."""

from ._base import DeepClusteringModel
from ._n_clusters import estimate_n_clusters
from ._scdmac import SCDMAC

__all__ = ["SCDMAC", "DeepClusteringModel", "estimate_n_clusters"]

"""Agreement with reference labels and the PCA+KMeans baseline that tests and benchmarks compare against."""

from ._baselines import log_hvg_pca, pca_kmeans
from ._scores import agreement

__all__ = ["agreement", "log_hvg_pca", "pca_kmeans"]

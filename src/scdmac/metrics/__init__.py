"""Agreement with reference labels and the PCA+KMeans baseline that tests and benchmarks compare against."""

from ._baselines import leiden_clusters, log_hvg_pca, pca_kmeans
from ._scores import agreement, best_match_f1

__all__ = ["agreement", "best_match_f1", "leiden_clusters", "log_hvg_pca", "pca_kmeans"]

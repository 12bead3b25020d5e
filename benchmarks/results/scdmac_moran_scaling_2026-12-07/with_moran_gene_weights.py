"""Run a benchmark script with SCDMAC's per-gene input weights set by graph autocorrelation (an ad hoc screen).

``SCDMAC(input_scaling="gene")`` divides each gene of the masked autoencoder's input by the standard deviation of
its log expression (``sc.pp.scale``'s weights), which lifts genes without structure as much as the few that mark a
rare type. Patched here to multiply that by the square root of the gene's Moran's I on the model's own kNN graph
(clipped below at 0.01): a gene is weighted by how much of its spread neighbouring cells share, and noise genes,
whose neighbours do not agree, fall back. Labels are never read. Usage::

    python with_moran_gene_weights.py benchmarks/accuracy.py --model-kwargs '{"input_scaling": "gene"}' ...
"""

import os
import runpy
import sys

import numpy as np
import scipy.sparse as sp

from scdmac.data import log_expression
from scdmac.model import _base

MIN_AUTOCORRELATION = 0.01


def moran_i(log_x, neighbors: np.ndarray) -> np.ndarray:
    """Moran's I of each column of ``log_x`` on the row-normalised kNN graph ``neighbors`` (self excluded)."""
    n, k = neighbors.shape
    weights = sp.csr_matrix((np.full(n * k, 1.0 / k), neighbors.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    z = np.asarray(log_x.todense() if sp.issparse(log_x) else log_x, dtype=np.float64)
    z -= z.mean(axis=0)
    denominator = (z * z).sum(axis=0)
    numerator = (z * (weights @ z)).sum(axis=0)
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-12), 0.0)


def _input_moments_with_moran(self, inputs):
    mean, var = _original(self, inputs)
    counts = self.adata_manager.get_from_registry(_base.REGISTRY_KEYS.X_KEY)
    log_x = log_expression(counts, inputs["gene_indices"], self._input_target(inputs))
    autocorrelation = np.clip(moran_i(log_x, self._neighbors()), MIN_AUTOCORRELATION, None)
    # Standardize divides by sqrt(var): var / I gives weights sqrt(I) / sd
    return mean, (var / autocorrelation).astype(np.float32)


_original = _base.DeepClusteringModel._input_moments
_base.DeepClusteringModel._input_moments = _input_moments_with_moran

if __name__ == "__main__":
    script = sys.argv[1]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")

"""Run a benchmark script with SCDMAC's per-gene input weights set by graph autocorrelation (an ad hoc screen).

``SCDMAC(input_scaling="gene")`` divides each gene of the masked autoencoder's input by the standard deviation of
its log expression (``sc.pp.scale``'s weights), which lifts genes without structure as much as the few that mark a
rare type. Patched here to multiply that by the square root of the gene's Moran's I on the model's own kNN graph
(clipped below at 0.01): a gene is weighted by how much of its spread neighbouring cells share, and noise genes,
whose neighbours do not agree, fall back. Labels are never read. Usage::

    python with_moran_gene_weights.py benchmarks/accuracy.py --model-kwargs '{"input_scaling": "gene"}' ...
"""

import sys
from pathlib import Path

import numpy as np
import scanpy as sc

from scdmac.data import adjacency, log_expression
from scdmac.model import _base

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from patched_run import run_benchmark  # noqa: E402

MIN_AUTOCORRELATION = 0.01


def _input_moments_with_moran(self, inputs):
    mean, var = _original(self, inputs)
    counts = self.adata_manager.get_from_registry(_base.REGISTRY_KEYS.X_KEY)
    log_x = log_expression(counts, inputs["gene_indices"], self._input_target(inputs))
    # Scanpy's Moran's I on the directed kNN graph (self excluded); the same to 1e-13 as the
    # row-normalised form the screen was first run with
    moran = sc.metrics.morans_i(adjacency(self._neighbors(), symmetric=False), log_x.T.tocsr())
    autocorrelation = np.clip(np.nan_to_num(moran), MIN_AUTOCORRELATION, None)
    # Standardize divides by sqrt(var): var / I gives weights sqrt(I) / sd
    return mean, (var / autocorrelation).astype(np.float32)


_original = _base.DeepClusteringModel._input_moments
_base.DeepClusteringModel._input_moments = _input_moments_with_moran

if __name__ == "__main__":
    run_benchmark(sys.argv[1:])

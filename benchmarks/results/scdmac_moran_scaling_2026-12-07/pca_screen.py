"""k-means on principal components of differently weighted genes: the screen that suggested Moran's I weights.

For each tuning-half file, its redrawn tissue sets (``benchmarks/tissue.py``) and the simulated tissue sets: log
expression of 2,000 highly variable genes (Scanpy's ``seurat`` flavour), each gene weighted, clipped at ±10, 50
principal components, k-means with the true k (3 seeds, 10 restarts). Moran's I of each gene on Scanpy's 15-NN
graph of the unweighted components (``sc.metrics.morans_i``). Validation-half files are printed to look at only.
Usage (from the repository root)::

    python benchmarks/results/scdmac_moran_scaling_2026-12-07/pca_screen.py
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from accuracy import SPLIT  # noqa: E402
from tissue import load_named  # noqa: E402

warnings.filterwarnings("ignore")
SETS = [(name, None) for name in SPLIT["tuning"] + SPLIT["validation"]]
SETS += [(name, seed) for name in ("pbmc_skewed", "bladder_skewed", "paul15_skewed") for seed in (0, 1)]
SETS += [(name, 0) for name in ("tissue_8_types", "tissue_8_types_subtle", "pancreas_like_13_types")]


def kmeans_ari(x: np.ndarray, truth: np.ndarray, k: int) -> float:
    runs = [KMeans(k, n_init=10, random_state=seed).fit_predict(x) for seed in range(3)]
    return float(np.mean([adjusted_rand_score(truth, labels) for labels in runs]))


def main() -> None:
    print("set seed | one scale | 1/sd (sc.pp.scale) | I/sd | sqrt(I)/sd | sqrt(I) | I")
    for name, seed in SETS:
        adata = load_named(name, seed)
        truth = adata.obs["cell_type"].astype(str).to_numpy()
        k = len(set(truth))
        if "counts" in adata.layers:
            adata.X = adata.layers["counts"]
        sc.pp.filter_genes(adata, min_cells=1)
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        sc.pp.highly_variable_genes(adata, n_top_genes=min(2000, adata.n_vars), flavor="seurat", subset=True)
        x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
        x = x - x.mean(axis=0)
        sd = x.std(axis=0)
        sd[sd < 1e-8] = 1.0
        n_comps = min(50, adata.n_obs - 1)
        adata.obsm["X_pca"] = PCA(n_comps, random_state=0).fit_transform(x)
        sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca", random_state=0)
        moran = np.clip(np.nan_to_num(sc.metrics.morans_i(adata.obsp["connectivities"], x.T)), 0, None)
        one = 1 / np.sqrt((sd**2).mean())
        weights = (np.full_like(sd, one), 1 / sd, moran / sd, np.sqrt(moran) / sd, one * np.sqrt(moran), one * moran)
        pcs = [PCA(n_comps, random_state=0).fit_transform(np.clip(x * w, -10, 10)) for w in weights]
        scores = [kmeans_ari(p, truth, k) for p in pcs]
        print(name, seed, " | ".join(f"{s:.3f}" for s in scores), flush=True)


if __name__ == "__main__":
    main()

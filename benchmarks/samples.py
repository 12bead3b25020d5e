"""Samples and query mapping: how far sample effects mislead each model, with and without ``batch_key``.

Data where the right answer is known:

* ``sim_shift``: simulated counts, 5 types spread evenly over 3 samples, each sample with a
  log-normal shift of every gene's mean (sd 0.5) and a library-size factor (sd 0.3);
* ``sim_tissue``: the same sample effects on tissue-like type sizes (one type 45%, the rarest 2%);
* ``pollen_fluidigm130``: real cells, ``obs["coverage"]`` (two sequencing depths) as the sample.

Each model (defaults, true k) is trained with and without ``batch_key`` on every dataset. Reported
per run: ARI of the clusters to the types (``ari_type``, higher is better) and to the samples
(``ari_sample``, near 0 is better), and two mixing scores of the embedding from scib-metrics
(``pip install scdmac[benchmark]``): iLISI (``ilisi``, 0 = samples apart, 1 = fully mixed) and batch ASW
(``batch_asw``, 1 = mixed within each type). PCA + k-means on the log-normalised data is the
uncorrected reference. For the simulated sets, a model trained with ``batch_key`` on half of the cells
(chosen at random) also maps the other half (``query_ari``: ARI of ``predict(adata=other_half)``).

Usage::

    python benchmarks/samples.py --seeds 0 1              # writes benchmarks/results/samples.{csv,md}
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scvi
from sklearn.metrics import adjusted_rand_score

import scdmac
from scdmac.data import TISSUE_PROPORTIONS

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHIFT = dict(n_cells=2000, n_genes=500, n_clusters=5, n_samples=3, sample_gene_sd=0.5)


def datasets(seed: int) -> dict[str, tuple[ad.AnnData, str]]:
    """Name → (AnnData with raw counts in X, sample column)."""
    data = {
        "sim_shift": (scdmac.data.simulate(**SHIFT, seed=seed + 1), "sample"),
        "sim_tissue": (
            scdmac.data.simulate(
                n_cells=2400,
                n_genes=500,
                n_clusters=8,
                proportions=TISSUE_PROPORTIONS,
                n_samples=3,
                sample_gene_sd=0.5,
                de_fraction=0.2,
                de_log_scale=1.5,
                seed=seed + 1,
            ),
            "sample",
        ),
    }
    pollen = SHARED / "pollen_fluidigm130.h5ad"
    if pollen.exists():
        data["pollen_fluidigm130"] = (ad.read_h5ad(pollen), "coverage")
    return data


def mixing(z: np.ndarray, types: np.ndarray, samples: np.ndarray) -> dict[str, float]:
    """iLISI and batch ASW of an embedding (scib-metrics)."""
    from scib_metrics import ilisi_knn, silhouette_batch
    from scib_metrics.nearest_neighbors import pynndescent

    neighbors = pynndescent(z, n_neighbors=min(90, len(z) - 1), random_state=0)
    return {
        "ilisi": float(ilisi_knn(neighbors, samples)),
        "batch_asw": float(silhouette_batch(z, types, samples)),
    }


def pca_kmeans(adata: ad.AnnData, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import scanpy as sc
    from sklearn.cluster import KMeans

    x = adata.copy()
    sc.pp.normalize_total(x, target_sum=1e4)
    sc.pp.log1p(x)
    sc.pp.highly_variable_genes(x, n_top_genes=min(2000, x.n_vars - 1), flavor="seurat")
    x = x[:, x.var["highly_variable"]].copy()
    sc.pp.scale(x, max_value=10)
    sc.pp.pca(x, n_comps=min(50, x.n_obs - 1, x.n_vars - 1), random_state=seed)
    z = x.obsm["X_pca"]
    return z, KMeans(k, n_init=10, random_state=seed).fit_predict(z)


def run_model(name: str, adata: ad.AnnData, sample_key: str | None, k: int, seed: int):
    cls = {"scdmac": scdmac.model.SCDMAC, "scdsec": scdmac.model.SCDSEC}[name]
    x = adata.copy()
    cls.setup_anndata(x, batch_key=sample_key)
    scvi.settings.seed = seed
    model = cls(x, n_clusters=k)
    model.train(enable_progress_bar=False)
    return model, x.obsm[model.latent_key], x.obs[model.cluster_key].astype(int).to_numpy()


def query_ari(name: str, adata: ad.AnnData, sample_key: str, k: int, seed: int) -> float:
    order = np.random.default_rng(seed).permutation(adata.n_obs)
    half = adata.n_obs // 2
    reference, query = adata[np.sort(order[:half])].copy(), adata[np.sort(order[half:])].copy()
    model, _, _ = run_model(name, reference, sample_key, k, seed)
    return float(adjusted_rand_score(query.obs["cell_type"], model.predict(query)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", default=["scdmac", "scdsec"])
    parser.add_argument("--out", type=Path, default=RESULTS / "samples")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        for data_name, (adata, sample_key) in datasets(seed).items():
            types = adata.obs["cell_type"].to_numpy()
            samples = adata.obs[sample_key].astype(str).to_numpy()
            k = len(np.unique(types))
            runs = [("pca_kmeans", None)] + [(m, key) for m in args.models for key in (None, sample_key)]
            for method, key in runs:
                start = time.perf_counter()
                if method == "pca_kmeans":
                    z, labels = pca_kmeans(adata, k, seed)
                else:
                    _, z, labels = run_model(method, adata, key, k, seed)
                row = {
                    "dataset": data_name,
                    "method": method,
                    "batch_key": key is not None,
                    "seed": seed,
                    "ari_type": adjusted_rand_score(types, labels),
                    "ari_sample": adjusted_rand_score(samples, labels),
                    **mixing(np.asarray(z, dtype=np.float32), types, samples),
                    "seconds": time.perf_counter() - start,
                }
                if method != "pca_kmeans" and key is not None and data_name.startswith("sim"):
                    row["query_ari"] = query_ari(method, adata, key, k, seed)
                rows.append(row)
                print(row, flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)
    table = pd.DataFrame(rows).groupby(["dataset", "method", "batch_key"]).mean(numeric_only=True).drop(columns="seed")
    text = (
        f"# Samples and query mapping (`python benchmarks/samples.py --seeds {' '.join(map(str, args.seeds))}`)\n\n"
        f"Means over seeds {args.seeds}; defaults, true k. ari_sample near 0 and ilisi/batch_asw near 1 mean "
        "samples are mixed.\n\n" + table.round(3).to_markdown() + "\n"
    )
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

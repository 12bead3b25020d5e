"""Which rule should turn a trained model's embedding into its final labels?

For each dataset of one half of the benchmark (``SPLIT`` in accuracy.py) and each seed, the model is
trained with its defaults and the true k, exactly as in accuracy.py, and its embeddings are cached
(``--cache``, not kept in the repository): the pretrained embedding, the refined one after the
clustering stage, and the labels the model returns. Label rules are then scored on the cache, so a
rule costs seconds, not a retraining:

* ``model``: the labels the model returns today (argmax of its soft assignment);
* ``kmeans_pre`` / ``kmeans_final``: k-means (10 starts) on the pretrained / refined embedding;
* ``ward_final``: Ward's agglomerative clustering on the refined embedding;
* ``gmm_final``: a Gaussian mixture with diagonal covariances, started from k-means;
* ``leiden_k_final``: Leiden on a 15-NN graph of the refined embedding, resolution bisected to k.

Every embedding is first put in the geometry the model's clustering head measures in (directions for
the cosine metric). Rules are chosen on the tuning half only; the validation half checks the choice.

Usage::

    python benchmarks/final_labels.py --model SCDMAC --half tuning --seeds 0 1 2
    python benchmarks/final_labels.py --model SCDMAC --half tuning --score-only
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import DEFAULT_DATA, SPLIT, train_in_two_parts

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache" / "final_labels"


def train_and_cache(model_name: str, dataset: str, seed: int, data_dir: Path, cache: Path) -> Path:
    """Train with defaults and the true k; save both embeddings, the labels and the truth."""
    import anndata as ad
    import scvi
    import torch

    import scdmac

    out = cache / f"{model_name}_{dataset}_{seed}.npz"
    if out.exists():
        return out
    adata = ad.read_h5ad(data_dir / f"{dataset}.h5ad")
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    k = len(set(truth))
    model_cls = getattr(scdmac.model, model_name)
    scvi.settings.seed = seed
    model_cls.setup_anndata(adata)
    model = model_cls(adata, n_clusters=k)
    z_pre, train_s = train_in_two_parts(model)
    head = model.module.cluster_head
    z_final = head.project(torch.from_numpy(model.get_latent_representation())).numpy()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        z_pre=z_pre,
        z_final=z_final,
        labels=np.asarray(model.predict()),
        truth=truth,
        train_s=train_s,
    )
    return out


def label_rules(z_pre: np.ndarray, z_final: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    """Every candidate rule's labels on one run's embeddings."""
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.mixture import GaussianMixture

    from scdmac.model._n_clusters import leiden_at_k

    rules = {
        "kmeans_pre": KMeans(k, n_init=10, random_state=seed).fit_predict(z_pre),
        "kmeans_final": KMeans(k, n_init=10, random_state=seed).fit_predict(z_final),
        "ward_final": AgglomerativeClustering(k, linkage="ward").fit_predict(z_final),
        "gmm_final": GaussianMixture(k, covariance_type="diag", n_init=3, random_state=seed).fit_predict(z_final),
    }
    rules["leiden_k_final"] = leiden_at_k(z_final, k, random_state=seed)
    return rules


def score(model_name: str, datasets: list[str], seeds: list[int], cache: Path) -> pd.DataFrame:
    from scdmac.metrics import agreement

    rows = []
    for dataset in datasets:
        for seed in seeds:
            path = cache / f"{model_name}_{dataset}_{seed}.npz"
            if not path.exists():
                continue
            run = np.load(path, allow_pickle=True)
            truth = run["truth"]
            k = len(set(truth))
            rules = {"model": run["labels"], **label_rules(run["z_pre"], run["z_final"], k, seed)}
            for rule, labels in rules.items():
                sizes = np.bincount(np.unique(labels, return_inverse=True)[1])
                rows.append(
                    {
                        "dataset": dataset,
                        "seed": seed,
                        "rule": rule,
                        "ari": agreement(truth, labels)["ari"],
                        "n_kept": int((sizes >= 2).sum()),
                    }
                )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SCDMAC", choices=["SCDMAC", "SCDSEC"])
    parser.add_argument("--half", default="tuning", choices=list(SPLIT))
    parser.add_argument("--datasets", nargs="*", help="default: every dataset of --half")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--csv", type=Path, help="write the per-run scores here")
    parser.add_argument("--score-only", action="store_true", help="score the cache, train nothing")
    args = parser.parse_args()
    datasets = args.datasets or SPLIT[args.half]
    if not args.score_only:
        for seed in args.seeds:  # every dataset at one seed before the next seed
            for dataset in datasets:
                train_and_cache(args.model, dataset, seed, args.data, args.cache)
                print(f"cached {args.model} {dataset} seed {seed}", flush=True)
    runs = score(args.model, datasets, args.seeds, args.cache)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.csv, index=False)
    table = runs.pivot_table(index="dataset", columns="rule", values="ari", aggfunc="mean")
    table.loc["mean"] = table.mean()
    print(table.round(3).to_markdown())
    print(runs.pivot_table(index="dataset", columns="rule", values="n_kept", aggfunc="min").to_markdown())


if __name__ == "__main__":
    main()

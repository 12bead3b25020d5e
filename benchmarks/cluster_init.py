"""How SCDMAC's clustering stage should start and how long it should run, measured on one pretraining.

For each dataset and seed, SCDMAC's pretraining stages (denoise, mask) run once with default settings;
then, from the same pretrained network, these ways of getting labels are compared:

* ``kmeans``: k-means (20 restarts) on the pretrained embedding, no DEC;
* ``kmeans_cosine``: the same on the embedding's directions (each cell scaled to length one);
* ``leiden_k``: Leiden communities of the embedding's 15-NN graph, resolution bisected to k;
* ``dec_kmeans``: the clustering stage as ``train()`` runs it by default (k-means centres, distances
  between directions: ``cluster_metric="cosine"``);
* ``dec_euclidean``: the clustering stage with Euclidean distances (SCDMAC's default until 2026-11-23);
* ``dec_leiden`` / ``dec_leiden_euclidean``: ``train(cluster_init="leiden")``, centres = means of the
  Leiden-at-k communities, with either metric;
* ``dec_euclidean_short``: as ``dec_euclidean`` with 300 instead of 1,000 clustering steps.

The labels are used only to score the finished runs; ``n_found`` counts the clusters that kept cells.
Rows go to a CSV as they finish.

Usage::

    python benchmarks/cluster_init.py --seeds 0 --threads 1
    python benchmarks/cluster_init.py --seeds 0 1 --variants kmeans kmeans_cosine dec_kmeans dec_euclidean \
        --csv benchmarks/results/cluster_metric_runs.csv
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_CSV = HERE / "results" / "cluster_init_runs.csv"
VARIANTS = ["kmeans", "kmeans_cosine", "leiden_k", "dec_kmeans", "dec_euclidean", "dec_leiden"]
#: clustering-stage variants: (cluster_metric, cluster_init, clustering steps or None for the default)
DEC_VARIANTS = {
    "dec_kmeans": ("cosine", "kmeans", None),
    "dec_euclidean": ("euclidean", "kmeans", None),
    "dec_leiden": ("cosine", "leiden", None),
    "dec_leiden_euclidean": ("euclidean", "leiden", None),
    "dec_euclidean_short": ("euclidean", "kmeans", 300),
}


def run(path: Path, seed: int, variants: list[str]) -> list[dict]:
    import anndata as ad
    import scvi
    import torch
    from sklearn.cluster import KMeans

    import scdmac
    from scdmac.metrics import agreement
    from scdmac.model._n_clusters import leiden_at_k

    adata = ad.read_h5ad(path)
    k = adata.obs["cell_type"].nunique()
    scvi.settings.seed = seed
    scdmac.model.SCDMAC.setup_anndata(adata)
    model = scdmac.model.SCDMAC(adata, n_clusters=k)
    t0 = time.perf_counter()
    model.train(stages=["denoise", "mask"], enable_progress_bar=False)
    pretrain_s = time.perf_counter() - t0
    z = model.get_latent_representation()
    state = copy.deepcopy(model.module.state_dict())

    rows = []

    def record(variant: str, labels: np.ndarray, seconds: float) -> None:
        scores = agreement(adata.obs["cell_type"], labels)
        row = dict(
            variant=variant,
            dataset=path.stem,
            seed=seed,
            n_types=k,
            ari=round(scores["ari"], 4),
            nmi=round(scores["nmi"], 4),
            n_found=len(np.unique(labels)),
            pretrain_s=round(pretrain_s, 1),
            stage_s=round(seconds, 1),
        )
        print(row, flush=True)
        rows.append(row)

    for variant in variants:
        t0 = time.perf_counter()
        if variant == "kmeans":
            record(variant, KMeans(k, n_init=20, random_state=seed).fit_predict(z), time.perf_counter() - t0)
            continue
        if variant == "kmeans_cosine":
            directions = z / np.linalg.norm(z, axis=1, keepdims=True)
            record(variant, KMeans(k, n_init=20, random_state=seed).fit_predict(directions), time.perf_counter() - t0)
            continue
        if variant == "leiden_k":
            record(variant, leiden_at_k(z, k, random_state=seed), time.perf_counter() - t0)
            continue
        # a clustering-stage variant: restart from the pretrained network
        metric, init, steps = DEC_VARIANTS[variant]
        model.module.cluster_head.reset(torch.zeros(0, z.shape[1]))
        model.module.load_state_dict(state, strict=False)
        model.module.cluster_head.metric = metric
        scvi.settings.seed = seed
        model.train(
            stages="cluster",
            cluster_init=init,
            stage_steps={"cluster": steps} if steps else None,
            enable_progress_bar=False,
        )
        record(variant, model.predict(), time.perf_counter() - t0)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="*")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--variants", nargs="*", default=VARIANTS)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.summary_only:
        done = set()
        if args.csv.exists():
            old = pd.read_csv(args.csv)
            done = set(zip(old.dataset, old.seed, strict=True))
        for path in sorted(args.data.glob("*.h5ad"), key=lambda p: p.stat().st_size):
            if args.datasets and path.stem not in args.datasets:
                continue
            for seed in args.seeds:
                if (path.stem, seed) in done:
                    continue
                rows = run(path, seed, args.variants)
                pd.DataFrame(rows).to_csv(args.csv, mode="a", header=not args.csv.exists(), index=False)
    runs = pd.read_csv(args.csv)
    table = runs.pivot_table(index="dataset", columns="variant", values="ari", aggfunc="mean")
    table.loc["average"] = table.mean()
    cols = list(table.columns)
    lines = ["| dataset | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for name, row in table.iterrows()]
    text = "\n".join(lines)
    print(text)
    args.csv.with_name(args.csv.stem.removesuffix("_runs") + "_summary.md").write_text(
        "ARI, mean over seeds (python benchmarks/cluster_init.py)\n\n" + text + "\n"
    )


if __name__ == "__main__":
    main()

"""Can the stability of k-means under subsampling pick SCDMAC's clustering geometry per dataset?

Directions seen from the mean of k-means centres (the default ``cluster_metric="cosine"``) won on the
nearly balanced files, Euclidean distances on real cells redrawn with tissue's skew, and no label-free
statistic tried so far told the two cases apart. This screen asks whether the geometry in which k-means
partitions are more reproducible over subsamples of the cells is the one that scores higher.

For each dataset of the tuning half and each redrawn set (``benchmarks/tissue.py``), and each seed, SCDMAC
is pretrained with its defaults (``accuracy.pretrain``; cached in ``--cache``). On the pretrained
embedding, in each geometry:

* ``ari``: k-means with the true k (10 starts, the seed), scored against the labels;
* ``stability``: the mean ARI between the k-means partitions (3 starts each) of ``--draws`` random
  subsamples of 80% of the cells, consecutive pairs compared on the cells they share. No label enters it.

Usage (from the repository root)::

    python benchmarks/results/scdmac_stability_choice_2026-12-07/screen.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy import SPLIT, pretrain  # noqa: E402
from scdsec_tuning import append_row  # noqa: E402
from tissue import RESAMPLED, load_named  # noqa: E402

HERE = Path(__file__).resolve().parent


def embeddings(name: str, seed: int, cache: Path) -> dict[str, np.ndarray]:
    """The pretrained embedding (Euclidean) and its directions from the mean of centres, with the truth."""
    out = cache / f"{name}_{seed}.npz"
    if not out.exists():
        import scvi

        import scdmac

        adata = load_named(name, seed)
        truth = adata.obs["cell_type"].astype(str).to_numpy()
        scvi.settings.seed = seed
        scdmac.model.SCDMAC.setup_anndata(adata)
        model = scdmac.model.SCDMAC(adata, n_clusters=len(set(truth)))
        z, z_head, _ = pretrain(model)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(out, euclidean=z, sphere=z_head, truth=truth)
    run = np.load(out, allow_pickle=True)
    return {key: run[key] for key in run.files}


def stability(X: np.ndarray, k: int, seed: int, draws: int, fraction: float = 0.8) -> float:
    """Mean ARI of k-means partitions of consecutive random subsamples, on the cells they share."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(seed)
    n = X.shape[0]
    labels = []
    for draw in range(draws):
        rows = np.sort(rng.choice(n, int(fraction * n), replace=False))
        full = np.full(n, -1)
        full[rows] = KMeans(k, n_init=3, random_state=seed * 100 + draw).fit_predict(X[rows])
        labels.append(full)
    scores = []
    for a, b in zip(labels[:-1], labels[1:], strict=True):
        shared = (a >= 0) & (b >= 0)
        scores.append(adjusted_rand_score(a[shared], b[shared]))
    return float(np.mean(scores))


def main() -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--datasets", nargs="+", default=SPLIT["tuning"] + list(RESAMPLED))
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "stability")
    parser.add_argument("--csv", type=Path, default=HERE / "stability_runs.csv")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        for name in args.datasets:
            run = embeddings(name, seed, args.cache)
            truth = run["truth"]
            k = len(set(truth))
            for geometry in ("sphere", "euclidean"):
                X = run[geometry]
                labels = KMeans(k, n_init=10, random_state=seed).fit_predict(X)
                row = {
                    "dataset": name,
                    "seed": seed,
                    "geometry": geometry,
                    "ari": round(adjusted_rand_score(truth, labels), 4),
                    "stability": round(stability(X, k, seed, args.draws), 4),
                }
                append_row(args.csv, row)


if __name__ == "__main__":
    main()

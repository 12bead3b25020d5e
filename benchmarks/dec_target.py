"""DEC's target distribution with and without its pull towards equal cluster sizes, on the tuning half.

DEC's target ``p_ik ∝ q_ik² / f_k`` divides by each cluster's soft size ``f_k``, which moves cells from
large clusters to small ones; real tissue has one type holding half the cells. ``target_balance``
(``plan_kwargs``) is the exponent of ``f_k``: 1 is DEC, 0 sharpens each cell's assignment alone.

For each tuning dataset and seed the model is pretrained once, and the clustering stage then runs
from the same pretrained network for every exponent (paired runs: the exponent is the only
difference). Rows are appended to a CSV as runs finish; labels score finished runs only. Only the
tuning half and ``benchmarks/tissue.py``'s simulated and redrawn sets (drawn from the tuning half)
are accepted.

Usage::

    python benchmarks/dec_target.py --model SCDMAC --seeds 0 1 --balances 1 0.5 0
    python benchmarks/dec_target.py --model SCDMAC --seeds 0 1 --balances 1 0.5 \
        --datasets pbmc_skewed bladder_skewed paul15_skewed pancreas_like_13_types
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from accuracy import DEFAULT_DATA, SPLIT, pretrain, pretrained_network, recluster
from scdsec_tuning import append_row
from tissue import DATASETS as SIMULATED
from tissue import RESAMPLED, load_tissue

HERE = Path(__file__).resolve().parent


def label_scores(truth, labels: np.ndarray, k: int) -> dict:
    """ARI and NMI of ``labels``, with the clusters kept (at least two cells) and the largest cluster's share."""
    from scdmac.metrics import agreement

    scores = agreement(truth, labels)
    return dict(
        ari=round(scores["ari"], 4),
        nmi=round(scores["nmi"], 4),
        n_kept=int((np.bincount(labels, minlength=k) >= 2).sum()),
        largest_share=round(float(np.bincount(labels).max() / labels.size), 3),
    )


def paired_pretrainings(model_name: str, datasets: list[str], seeds: list[int]):
    """Pretrain once per dataset and seed, for clustering stages run from the same network (paired runs).

    Yields ``(dataset, seed, truth, model, pretrained, row)``: ``pretrained`` is the network to give
    :func:`~accuracy.recluster`, ``row`` the run's columns so far (k-means ARI on the pretrained
    embedding, pretraining seconds).
    """
    import anndata as ad
    import scvi
    from sklearn.cluster import KMeans

    import scdmac
    from scdmac.metrics import agreement

    model_cls = getattr(scdmac.model, model_name)
    for ds in datasets:
        # a file is read once; simulated and redrawn tissue (benchmarks/tissue.py) is drawn anew for each seed
        real = None if ds in SIMULATED or ds in RESAMPLED else ad.read_h5ad(DEFAULT_DATA / f"{ds}.h5ad")
        for seed in seeds:
            data = real if real is not None else load_tissue(ds, seed)
            truth = data.obs["cell_type"].astype(str)
            k = truth.nunique()
            adata = data.copy()
            scvi.settings.seed = seed
            model_cls.setup_anndata(adata)
            model = model_cls(adata, n_clusters=k)
            z, _, pre_s = pretrain(model)
            pre = agreement(truth, KMeans(k, n_init=10, random_state=seed).fit_predict(z))["ari"]
            yield ds, seed, truth, model, pretrained_network(model), dict(ari_pretrained=round(pre, 4), pre_s=pre_s)


def refuse_unseen_sets(datasets: list[str]) -> None:
    """Stop unless every set is in the tuning half or is one of ``benchmarks/tissue.py``'s sets."""
    unknown = set(datasets) - set(SPLIT["tuning"]) - set(RESAMPLED) - set(SIMULATED)
    if unknown:
        raise SystemExit(
            f"{sorted(unknown)} are not in the tuning half or benchmarks/tissue.py's sets: settings are never "
            "chosen on the others."
        )


def run(model_name: str, datasets: list[str], seeds: list[int], balances: list[float], out: Path) -> None:
    for ds, seed, truth, model, pretrained, pre in paired_pretrainings(model_name, datasets, seeds):
        for balance in balances:
            t1 = time.perf_counter()
            recluster(model, pretrained, seed, plan_kwargs={"target_balance": balance})
            scores = label_scores(truth, np.asarray(model.predict()), truth.nunique())
            append_row(
                out,
                dict(
                    model=model_name,
                    dataset=ds,
                    seed=seed,
                    balance=balance,
                    ari=scores["ari"],
                    nmi=scores["nmi"],
                    ari_pretrained=pre["ari_pretrained"],
                    n_kept=scores["n_kept"],
                    largest_share=scores["largest_share"],
                    pre_s=round(pre["pre_s"], 1),
                    cluster_s=round(time.perf_counter() - t1, 1),
                ),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SCDMAC", choices=("SCDMAC", "SCDSEC"))
    parser.add_argument("--datasets", nargs="*", default=SPLIT["tuning"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--balances", nargs="*", type=float, default=[1.0, 0.5, 0.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=HERE / "results" / "dec_target_runs.csv")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    refuse_unseen_sets(args.datasets)
    run(args.model, args.datasets, args.seeds, [float(b) for b in args.balances], args.csv)


if __name__ == "__main__":
    main()

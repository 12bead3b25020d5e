"""Where a model's clustering stage starts, and what the stage makes of it: a diagnosis on one pretraining.

For a dataset and seed, the model's pretraining stages run with default settings; then, from the same
pretrained network, both starts the models offer are scored alone and after the clustering stage:

* ``kmeans``: k-means (20 restarts) on the pretrained embedding in the clustering head's geometry;
* ``leiden``: Leiden communities of that embedding's 15-NN graph, resolution bisected to k.

Each line gives the ARI and the cluster sizes (largest first) beside the labelled types' sizes, so a start
that merges large types or splits a dominant one shows. The labels only score; nothing here chooses a
default, and the validation half may be diagnosed this way. The clustering stage runs in a second
``train()`` call, so its labels can differ slightly from the accuracy benchmark's single call.

Usage::

    python benchmarks/start_diagnosis.py --model SCDSEC --dataset worm_neuron_cao --seed 0 --threads 2
"""

from __future__ import annotations

import argparse

import numpy as np
from accuracy import DEFAULT_DATA, pretrain, pretrained_network, recluster


def sizes(labels: np.ndarray) -> list[int]:
    """Cluster sizes, largest first."""
    return sorted(np.unique(labels, return_counts=True)[1].tolist(), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SCDSEC", choices=("SCDMAC", "SCDSEC"))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import anndata as ad
    import scvi
    import torch
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    import scdmac
    from scdmac.model._n_clusters import leiden_at_k

    torch.set_num_threads(args.threads)
    adata = ad.read_h5ad(DEFAULT_DATA / f"{args.dataset}.h5ad")
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    k = len(np.unique(truth))
    scvi.settings.seed = args.seed
    model_cls = getattr(scdmac.model, args.model)
    model_cls.setup_anndata(adata)
    model = model_cls(adata, n_clusters=k)
    _, z_head, _ = pretrain(model)
    starts = {
        "kmeans": KMeans(k, n_init=20, random_state=args.seed).fit_predict(z_head),
        "leiden": leiden_at_k(z_head, k, random_state=args.seed),
    }
    network = pretrained_network(model)
    print(f"types: {sizes(truth)}")
    print("| start | ARI alone | sizes alone | ARI after the clustering stage | sizes after |")
    print("|---|---:|---|---:|---|")
    for name, start in starts.items():
        recluster(model, network, args.seed, cluster_init=name)
        final = np.asarray(model.predict())
        print(
            f"| {name} | {adjusted_rand_score(truth, start):.3f} | {sizes(start)} "
            f"| {adjusted_rand_score(truth, final):.3f} | {sizes(final)} |"
        )


if __name__ == "__main__":
    main()

"""How much of a model's pretrained embedding is sequencing depth: a diagnosis, not a tuning tool.

Real tissue comes from libraries sequenced to different depths, and log-normalised expression still
carries a cell's depth. A clustering embedding should not: cells of one type at different depths
are one type. For each dataset this script pretrains a model (defaults, or ``--model-kwargs``) and
reports, within each labelled type, the share of the embedding's variance that the cell's log
library size explains linearly (pooled over types: ``Σ_types explained / Σ_types total``), for

* ``input``: the principal components the model's setup builds its graph on (its genes,
  log-normalisation and PCA);
* ``embedding``: the pretrained embedding in the clustering head's geometry.

Beside them it gives k-means (true k) on the pretrained embedding, so a lower depth share can be set
against the clusters. Labels define the types and score; nothing here chooses a default. Simulated
tissue (``benchmarks/tissue.py``'s datasets) can be named too: its samples differ in depth by design.

Usage::

    python benchmarks/depth_diagnosis.py --model SCDSEC --datasets mouse_bladder_han_top2000 --seeds 0
    python benchmarks/depth_diagnosis.py --model SCDMAC --datasets pancreas_like_13_types \
        --model-kwargs '{"depth_decoder": true}'
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from accuracy import DEFAULT_DATA, _model_input_pcs, pretrain
from tissue import DATASETS as SIMULATED
from tissue import simulate_tissue


def depth_share(embedding: np.ndarray, log_library: np.ndarray, types: np.ndarray) -> float:
    """Share of the within-type variance of ``embedding`` explained linearly by ``log_library``, pooled over types."""
    explained = total = 0.0
    for t in np.unique(types):
        rows = types == t
        if rows.sum() < 10:  # too few cells for a slope
            continue
        z = embedding[rows] - embedding[rows].mean(0)
        depth = log_library[rows] - log_library[rows].mean()
        slope = depth @ z / max(float(depth @ depth), 1e-12)
        explained += float(np.square(np.outer(depth, slope)).sum())
        total += float(np.square(z).sum())
    return explained / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SCDMAC", choices=("SCDMAC", "SCDSEC"))
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-kwargs", type=json.loads, default=None, help="JSON keyword arguments of the model")
    args = parser.parse_args()

    import anndata as ad
    import scvi
    import torch
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    import scdmac

    torch.set_num_threads(args.threads)
    model_cls = getattr(scdmac.model, args.model)
    print("| dataset | seed | depth share, input PCs | depth share, embedding | k-means ARI on the embedding |")
    print("|---|---:|---:|---:|---:|")
    for name in args.datasets:
        for seed in args.seeds:
            if name in SIMULATED:
                adata = simulate_tissue(name, seed)
            else:
                adata = ad.read_h5ad(DEFAULT_DATA / f"{name}.h5ad")
            types = adata.obs["cell_type"].astype(str).to_numpy()
            log_library = np.log(np.asarray(adata.X.sum(1)).ravel())
            k = len(np.unique(types))
            scvi.settings.seed = seed
            model_cls.setup_anndata(adata)
            model = model_cls(adata, n_clusters=k, **(args.model_kwargs or {}))
            _, z_head, _ = pretrain(model)
            kmeans = KMeans(k, n_init=20, random_state=seed).fit_predict(z_head)
            print(
                f"| {name} | {seed} | {depth_share(_model_input_pcs(adata, model_cls), log_library, types):.3f} "
                f"| {depth_share(z_head, log_library, types):.3f} | {adjusted_rand_score(types, kmeans):.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

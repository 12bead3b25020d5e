"""k-means on a model's pretrained embedding, Euclidean and in the clustering head's geometry, on the tuning half.

For each tuning dataset and seed the model's pretraining stages run with default settings (the same
network a default ``train()`` clusters from: the accuracy benchmark's ``ari_pretrained`` is the
``head`` column here, to the digit), and k-means with the true k (10 restarts, the seed) labels

* ``euclid``: the embedding itself (``get_latent_representation()``);
* ``head``: the embedding as the clustering head sees it (directions scaled to one radius for the
  cosine metric, SCDMAC's default).

Compare with the final labels of the same seed in ``benchmarks/results/accuracy_runs.csv``. Rows are
appended to a CSV as runs finish; only the tuning half is accepted.

Usage::

    python benchmarks/pretrained_kmeans.py --model SCDMAC --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from accuracy import DEFAULT_DATA, SPLIT, _kmeans_ari, pretrain
from scdsec_tuning import append_row

HERE = Path(__file__).resolve().parent


def run(model_name: str, datasets: list[str], seeds: list[int], out: Path) -> None:
    import anndata as ad
    import scvi

    import scdmac

    model_cls = getattr(scdmac.model, model_name)
    for seed in seeds:
        for ds in datasets:
            adata = ad.read_h5ad(DEFAULT_DATA / f"{ds}.h5ad")
            truth = adata.obs["cell_type"]
            k = truth.nunique()
            scvi.settings.seed = seed
            model_cls.setup_anndata(adata)
            model = model_cls(adata, n_clusters=k)
            z, z_head, _ = pretrain(model)
            row = {"dataset": ds, "seed": seed, "euclid": _kmeans_ari(z, truth, k, seed)}
            append_row(out, {**row, "head": _kmeans_ari(z_head, truth, k, seed)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SCDMAC", choices=("SCDMAC", "SCDSEC"))
    parser.add_argument("--datasets", nargs="*", default=SPLIT["tuning"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--csv", type=Path, default=HERE / "results" / "pretrained_kmeans_2026-12-05" / "scdmac_tuning_runs.csv"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    unknown = set(args.datasets) - set(SPLIT["tuning"])
    if unknown:
        raise SystemExit(f"{sorted(unknown)} are not in the tuning half: settings are never chosen on the others.")
    run(args.model, args.datasets, args.seeds, args.csv)


if __name__ == "__main__":
    main()

"""SCDSEC settings compared on the tuning half of the benchmark (``SPLIT["tuning"]`` in accuracy.py).

Two experiments, each appending rows to a CSV as runs finish:

* ``configs``: whole trainings with settings other than the defaults (the paper's 50 neighbours and
  joint-stage learning rate 1e-5; 2,000 genes with a cosine graph and whole-data input scaling);
  ``ari_pretrained`` is k-means on the pretrained embedding.
  ``pcs50``, ``pcs10`` and ``pcs20`` build the graph on 50 (the default), 10 or 20
  principal components; ``cos20`` takes cosine neighbours on 20 components.
  ``widths256`` and ``widths128`` narrow the encoder and decoder layers (faster steps at scale).
  ``steps_half`` halves each stage's default optimiser steps (200 and 150), ``batch256`` halves the
  batch at the default steps: both halve the training's arithmetic.
* ``init``: one pretraining per dataset, then the clustering stage twice from the same network, once
  from k-means centres and once from Leiden-at-k communities (``train(cluster_init=...)``), for one
  input scaling (``--input-scaling``).

``--seed`` sets the seed of the configs experiment (0 unless given; ``init`` runs seed 0). Labels
score finished runs only; defaults are chosen from these rows, never on the validation half.

Usage::

    python benchmarks/scdsec_tuning.py configs --configs paper hvg2000_cos_global
    python benchmarks/scdsec_tuning.py init --input-scaling batch
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from accuracy import DEFAULT_DATA, SPLIT, pretrained_network, recluster

HERE = Path(__file__).resolve().parent
CONFIGS = {  # (setup_anndata, model, train) arguments
    "pcs50": ({"n_pcs": 50}, {}, {}),
    # the kNN graph on fewer principal components: purer edges on the tuning half (method notes)
    "pcs10": ({"n_pcs": 10}, {}, {}),
    "pcs20": ({"n_pcs": 20}, {}, {}),
    # cosine neighbours on 20 components: purer edges than the default's Euclidean 50 on all nine sets
    "cos20": ({"n_pcs": 20, "metric": "cosine"}, {}, {}),
    # narrower layers than the paper's 500-500-2000: about 4x / 14x fewer multiply-adds per cell
    "widths256": ({}, {"hidden_widths": (256, 256, 1024)}, {}),
    "widths128": ({}, {"hidden_widths": (128, 128, 512)}, {}),
    "paper": ({"n_neighbors": 50}, {}, {"cluster_lr": 1e-5}),
    # half the arithmetic of the default training: half the optimiser steps, or half the batch
    "steps_half": ({}, {}, {"stage_steps": {"pretrain": 200, "cluster": 150}}),
    "batch256": ({}, {}, {"batch_size": 256}),
    "hvg2000_cos_gene": ({"n_top_genes": 2000, "metric": "cosine"}, {"input_scaling": "gene"}, {}),
    "hvg2000_cos_global": ({"n_top_genes": 2000, "metric": "cosine"}, {"input_scaling": "global"}, {}),
}


def append_row(path: Path, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` (with a header when new) and print it."""
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(row, flush=True)


def _model(adata, k: int, setup: dict, model_kwargs: dict, seed: int = 0):
    import scvi

    import scdmac

    scvi.settings.seed = seed
    scdmac.model.SCDSEC.setup_anndata(adata, **setup)
    return scdmac.model.SCDSEC(adata, n_clusters=k, **model_kwargs)


def _for_stage(train_kwargs: dict, stage: str) -> dict:
    """``train_kwargs`` for a run of ``stage`` alone (``stage_steps`` may name only the stages that run)."""
    kwargs = dict(train_kwargs)
    steps = {k: v for k, v in kwargs.pop("stage_steps", {}).items() if k == stage}
    return {**kwargs, "stage_steps": steps} if steps else kwargs


def run_configs(datasets: list[str], names: list[str], out: Path, seed: int = 0) -> None:
    import anndata as ad
    from sklearn.cluster import KMeans

    from scdmac.metrics import agreement

    for ds in datasets:
        truth_data = ad.read_h5ad(DEFAULT_DATA / f"{ds}.h5ad")
        k = truth_data.obs["cell_type"].nunique()
        for name in names:
            setup, model_kwargs, train_kwargs = CONFIGS[name]
            model = _model(truth_data.copy(), k, setup, model_kwargs, seed)
            t0 = time.perf_counter()
            model.train(stages="pretrain", enable_progress_bar=False, **_for_stage(train_kwargs, "pretrain"))
            z = model.get_latent_representation()
            pre = agreement(truth_data.obs["cell_type"], KMeans(k, n_init=10, random_state=0).fit_predict(z))["ari"]
            model.train(stages="cluster", enable_progress_bar=False, **_for_stage(train_kwargs, "cluster"))
            labels = model.predict()
            append_row(
                out,
                dict(
                    config=name,
                    dataset=ds,
                    seed=seed,
                    ari=round(agreement(truth_data.obs["cell_type"], labels)["ari"], 4),
                    ari_pretrained=round(pre, 4),
                    n_kept=int((np.bincount(labels, minlength=k) >= 2).sum()),
                    train_s=round(time.perf_counter() - t0, 1),
                ),
            )


def run_init(datasets: list[str], input_scaling: str, out: Path) -> None:
    import anndata as ad

    from scdmac.metrics import agreement

    for ds in datasets:
        truth_data = ad.read_h5ad(DEFAULT_DATA / f"{ds}.h5ad")
        k = truth_data.obs["cell_type"].nunique()
        model = _model(truth_data.copy(), k, {}, {"input_scaling": input_scaling})
        t0 = time.perf_counter()
        model.train(stages="pretrain", enable_progress_bar=False)
        pre_s = time.perf_counter() - t0
        pretrained = pretrained_network(model)
        for init in ("kmeans", "leiden"):
            t1 = time.perf_counter()
            recluster(model, pretrained, 0, cluster_init=init)
            labels = model.predict()
            append_row(
                out,
                dict(
                    config=f"{input_scaling}_{init}",
                    dataset=ds,
                    ari=round(agreement(truth_data.obs["cell_type"], labels)["ari"], 4),
                    n_kept=int((np.bincount(labels, minlength=k) >= 2).sum()),
                    pre_s=round(pre_s, 1),
                    cluster_s=round(time.perf_counter() - t1, 1),
                ),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("configs", "init"))
    parser.add_argument("--datasets", nargs="*", default=SPLIT["tuning"])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--input-scaling", default="batch", choices=("batch", "global", "gene"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the configs experiment's trainings")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    unknown = set(args.datasets) - set(SPLIT["tuning"])
    if unknown:
        raise SystemExit(f"{sorted(unknown)} are not in the tuning half: settings are never chosen on the others.")
    if args.experiment == "configs":
        run_configs(args.datasets, args.configs, HERE / "results" / "scdsec_tuning_runs.csv", args.seed)
    else:
        run_init(args.datasets, args.input_scaling, HERE / "results" / "scdsec_init_tuning_runs.csv")


if __name__ == "__main__":
    main()

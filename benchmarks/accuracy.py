"""Clustering accuracy and training time of scdmac's models beside standard peers.

Every dataset in ``../shared/data`` (raw counts, labels in ``obs["cell_type"]``) is clustered by

* ``scdmac`` / ``scdsec``: this package's models, default settings, true number of clusters;
* ``pca_kmeans``: log-normalisation, 2,000 highly variable genes, scaling, 50 PCs, k-means;
* ``leiden``: Scanpy's standard pipeline (same PCA, 15-NN graph, Leiden at resolution 1);
* ``scvi``: scVI with default settings on 2,000 HVGs (seurat_v3), k-means on its latent space.

Each (method, dataset, seed) run is appended to a CSV as soon as it finishes, so the script can be
stopped and resumed; runs already in the CSV are skipped. The summary (mean over seeds) is printed
as a markdown table and written next to the CSV.

Usage::

    python benchmarks/accuracy.py --methods scdmac pca_kmeans leiden scvi --seeds 0 1 2
    python benchmarks/accuracy.py --summary-only
    python benchmarks/accuracy.py --methods scdmac scvi --datasets pbmc_10x_4k_top2000 --single-seed \
        --csv benchmarks/results/timing_pbmc/runs.csv     # timing: every method on every seed
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_CSV = HERE / "results" / "accuracy_runs.csv"
FIELDS = ["method", "dataset", "seed", "n_cells", "n_genes", "n_types", "ari", "nmi", "train_s", "total_s"]


def _scores(truth, labels) -> tuple[float, float]:
    from scdmac.metrics import agreement

    scores = agreement(truth, labels)
    return scores["ari"], scores["nmi"]


def run_pca_kmeans(adata, k: int, seed: int):
    from scdmac.metrics import pca_kmeans

    t0 = time.perf_counter()
    labels = pca_kmeans(adata, k, seed)
    return labels, time.perf_counter() - t0


def run_leiden(adata, k: int, seed: int):
    import scanpy as sc

    from scdmac.metrics import log_hvg_pca

    t0 = time.perf_counter()
    b = log_hvg_pca(adata, seed)
    sc.pp.neighbors(b, n_neighbors=15, random_state=seed)
    sc.tl.leiden(b, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    return b.obs["leiden"].to_numpy(), time.perf_counter() - t0


def run_scvi(adata, k: int, seed: int):
    import scanpy as sc
    import scvi
    from sklearn.cluster import KMeans

    b = adata.copy()
    sc.pp.filter_genes(b, min_cells=1)
    if b.n_vars > 2000:
        try:
            sc.pp.highly_variable_genes(b, n_top_genes=2000, flavor="seurat_v3")
        except ValueError:  # seurat_v3's loess fit fails on some sparse sets (worm): widen its span
            sc.pp.highly_variable_genes(b, n_top_genes=2000, flavor="seurat_v3", span=1.0)
        b = b[:, b.var.highly_variable].copy()
    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(b)
    model = scvi.model.SCVI(b)
    t0 = time.perf_counter()
    model.train(enable_progress_bar=False)
    train_s = time.perf_counter() - t0
    z = model.get_latent_representation()
    return KMeans(k, n_init=10, random_state=seed).fit_predict(z), train_s


def _run_package_model(name: str):
    def run(adata, k: int, seed: int):
        import scvi

        import scdmac

        model_cls = getattr(scdmac.model, name)
        b = adata.copy()
        scvi.settings.seed = seed
        model_cls.setup_anndata(b)
        model = model_cls(b, n_clusters=k)
        t0 = time.perf_counter()
        model.train(enable_progress_bar=False)
        train_s = time.perf_counter() - t0
        return np.asarray(model.predict()), train_s

    return run


METHODS = {
    "scdmac": _run_package_model("SCDMAC"),
    "scdsec": _run_package_model("SCDSEC"),
    "pca_kmeans": run_pca_kmeans,
    "leiden": run_leiden,
    "scvi": run_scvi,
}
# scVI's default training takes minutes per dataset here: one seed, as the brief allows.
SINGLE_SEED = {"scvi"}


def _done(csv_path: Path) -> set[tuple[str, str, int]]:
    if not csv_path.exists():
        return set()
    runs = pd.read_csv(csv_path)
    return {(r.method, r.dataset, int(r.seed)) for r in runs.itertuples()}


def _append(csv_path: Path, row: dict) -> None:
    new = not csv_path.exists()
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def summarize(csv_path: Path, methods: list[str] | None = None) -> str:
    """Mean ARI/NMI over seeds per (dataset, method), as a markdown table with averages."""
    runs = pd.read_csv(csv_path)
    if methods:
        runs = runs[runs.method.isin(methods)]
    mean = runs.groupby(["dataset", "method"])[["ari", "nmi"]].mean()
    mean["train_s"] = runs.groupby(["dataset", "method"]).train_s.median()
    mean = mean.reset_index()
    nseeds = runs.groupby(["dataset", "method"]).seed.nunique().reset_index(name="seeds")
    mean = mean.merge(nseeds)
    order = [m for m in METHODS if m in set(mean.method)]
    lines = []
    for metric in ("ari", "nmi"):
        wide = mean.pivot(index="dataset", columns="method", values=metric)[order]
        lines.append(f"### {metric.upper()} (mean over seeds)\n")
        lines.append("| dataset | " + " | ".join(order) + " |")
        lines.append("|---|" + "---:|" * len(order))
        for ds, row in wide.iterrows():
            best = row.max()
            cells = [(f"**{v:.3f}**" if v == best else f"{v:.3f}") if pd.notna(v) else "" for v in row]
            lines.append(f"| {ds} | " + " | ".join(cells) + " |")
        # averages and wins only over datasets every method has finished, so they compare like with like
        complete = wide.dropna()
        lines.append(
            f"| **average** ({len(complete)} complete datasets) | "
            + " | ".join(f"{v:.3f}" for v in complete.mean())
            + " |"
        )
        wins = complete.eq(complete.max(axis=1), axis=0).sum()
        lines.append("| datasets won (complete) | " + " | ".join(str(int(wins[m])) for m in order) + " |")
        lines.append("")
    train = mean.pivot(index="dataset", columns="method", values="train_s")[order]
    lines.append("### Training time (s, median over seeds; peers without training report their whole run)\n")
    lines.append("| dataset | " + " | ".join(order) + " |")
    lines.append("|---|" + "---:|" * len(order))
    for ds, row in train.iterrows():
        lines.append(f"| {ds} | " + " | ".join(f"{v:.1f}" if pd.notna(v) else "" for v in row) + " |")
    if {"scdmac", "scvi"} <= set(order):
        ratio = (train["scdmac"] / train["scvi"]).dropna()
        lines.append("")
        lines.append(
            "Median training time, SCDMAC / scVI (comparable only where both ran under the same load and "
            "threads): " + ", ".join(f"{ds} {r:.2f}" for ds, r in ratio.items())
        )
    seeds = mean.pivot(index="dataset", columns="method", values="seeds")[order]
    lines.append("")
    lines.append("Seeds per cell: " + ", ".join(f"{m}={int(seeds[m].max())}" for m in order))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="*", help="dataset file stems (default: all)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--single-seed",
        nargs="*",
        default=sorted(SINGLE_SEED),
        help="methods run with the first seed only (default: scvi; give none to run every seed, e.g. for timing)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    if not args.summary_only:
        import anndata as ad

        done = _done(args.csv)
        files = sorted(args.data.glob("*.h5ad"), key=lambda p: p.stat().st_size)
        for path in files:
            if args.datasets and path.stem not in args.datasets:
                continue
            adata = None
            for method in args.methods:
                for seed in args.seeds[:1] if method in args.single_seed else args.seeds:
                    if (method, path.stem, seed) in done:
                        continue
                    if adata is None:
                        adata = ad.read_h5ad(path)
                    k = adata.obs["cell_type"].nunique()
                    t0 = time.perf_counter()
                    labels, train_s = METHODS[method](adata, k, seed)
                    total_s = time.perf_counter() - t0
                    ari, nmi = _scores(adata.obs["cell_type"], labels)
                    row = dict(
                        method=method,
                        dataset=path.stem,
                        seed=seed,
                        n_cells=adata.n_obs,
                        n_genes=adata.n_vars,
                        n_types=k,
                        ari=round(ari, 4),
                        nmi=round(nmi, 4),
                        train_s=round(train_s, 2),
                        total_s=round(total_s, 2),
                    )
                    _append(args.csv, row)
                    print(row, flush=True)
    table = summarize(args.csv)
    print(table)
    args.csv.with_name("accuracy_summary.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

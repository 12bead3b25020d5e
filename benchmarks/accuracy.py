"""Clustering accuracy and training time of scdmac's models beside standard peers.

Every dataset in ``../shared/data`` (raw counts, labels in ``obs["cell_type"]``) is clustered by

* ``scdmac`` / ``scdsec``: this package's models, default settings, true number of clusters;
* ``pca_kmeans``: log-normalisation, 2,000 highly variable genes, scaling, 50 PCs, k-means;
* ``leiden``: Scanpy's standard pipeline (same PCA, 15-NN graph, Leiden at resolution 1);
* ``leiden_k``: the same pipeline with the resolution bisected until Leiden returns the true k;
* ``scvi``: scVI with default settings on 2,000 HVGs (seurat_v3), k-means on its latent space.

The datasets are split once into a tuning half (defaults may be chosen on it) and a validation half
(reported, never tuned on): see :data:`SPLIT`. The summary reports both halves apart, each dataset's
margin to the best peer, the seed-to-seed spread and the number of clusters our models kept.

For our models each run is diagnostic: beside the final labels (``ari``) it scores k-means with the
true k on the model's own preprocessed input (its genes, log-normalisation and PCA: ``ari_input``) and
on the pretrained embedding before the clustering stage (``ari_pretrained``), so the stage that loses
accuracy on a dataset shows. ``n_kept`` counts the final clusters holding at least two cells. For every
method ``n_clusters`` counts the clusters returned: Leiden at resolution 1 is not told k, and where it
returns fewer clusters than the labels have types, a method told k competes with a coarser partition.

Each (method, dataset, seed) run is appended to a CSV as soon as it finishes, so the script can be
stopped and resumed; runs already in the CSV are skipped. The summary (mean over seeds) is printed
as a markdown table and written next to the CSV (:func:`summary_path`).

Usage::

    python benchmarks/accuracy.py --methods scdmac pca_kmeans leiden scvi --seeds 0 1 2
    python benchmarks/accuracy.py --summary-only
    python benchmarks/accuracy.py --methods scdsec --precision 32-true --csv benchmarks/results/x/runs.csv
    python benchmarks/accuracy.py --methods scdmac --model-kwargs '{"cluster_metric": "euclidean"}' \
        --csv benchmarks/results/y/runs.csv     # a candidate setting, rows kept apart from the defaults
    python benchmarks/accuracy.py --methods scdmac scvi --datasets pbmc_10x_4k_top2000 \
        --csv benchmarks/results/timing_pbmc/runs.csv     # timing: three runs of each method
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_CSV = HERE / "results" / "accuracy_runs.csv"
FIELDS = [
    "method",
    "dataset",
    "seed",
    "n_cells",
    "n_genes",
    "n_types",
    "ari",
    "nmi",
    "train_s",
    "total_s",
    "ari_input",
    "ari_pretrained",
    "n_kept",
    "n_clusters",
]
#: Fixed before any default was chosen on it (2026-12-01). Studies stay together (both bladder sets).
SPLIT = {
    "tuning": [
        "camp_fetal_brain",
        "mouse_bladder_han_2100",
        "mouse_bladder_han_top2000",
        "paul15_myeloid",
        "pbmc_10x_4k_top2000",
    ],
    "validation": [
        "cbmc_citeseq_top2000",
        "human_kidney_young_top2000",
        "pollen_fluidigm130",
        "worm_neuron_cao",
    ],
}
OURS = ("scdmac", "scdsec")
PEERS = ("pca_kmeans", "leiden", "leiden_k", "scvi")


def _scores(truth, labels) -> tuple[float, float]:
    from scdmac.metrics import agreement

    scores = agreement(truth, labels)
    return scores["ari"], scores["nmi"]


def run_pca_kmeans(adata, k: int, seed: int):
    from scdmac.metrics import pca_kmeans

    t0 = time.perf_counter()
    labels = pca_kmeans(adata, k, seed)
    return labels, time.perf_counter() - t0


def run_leiden(adata, k: int | None, seed: int):
    from scdmac.metrics import leiden_clusters

    t0 = time.perf_counter()
    labels = leiden_clusters(adata, k, seed)
    return labels, time.perf_counter() - t0


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


def _kmeans_ari(X, truth, k: int, seed: int) -> float:
    from sklearn.cluster import KMeans

    return _scores(truth, KMeans(k, n_init=10, random_state=seed).fit_predict(X))[0]


def _model_input_pcs(adata, model_cls) -> np.ndarray:
    """The principal components the model's setup builds its graph on (its genes and normalisation)."""
    from scdmac.data._preprocess import log_expression, pca

    hvg = adata.var[model_cls.hvg_key()].to_numpy(dtype=bool)
    args = model_cls._get_most_recent_anndata_manager(adata, required=True).registry["setup_args"]
    return pca(log_expression(adata.X, np.flatnonzero(hvg)), args["n_pcs"], 0, args.get("pcs_above_noise", False))


def _for_stages(train_kwargs: dict, stages: list[str]) -> dict:
    """``train_kwargs`` with ``stage_steps`` restricted to ``stages`` (``train`` refuses others)."""
    if "stage_steps" not in train_kwargs:
        return train_kwargs
    steps = {name: n for name, n in train_kwargs["stage_steps"].items() if name in stages}
    return {**train_kwargs, "stage_steps": steps or None}


def pretrain(model, **train_kwargs) -> tuple[np.ndarray, np.ndarray, float]:
    """Train every stage but the clustering one, as a default ``train()`` does before it.

    ``train_kwargs`` go to ``train`` (e.g. ``precision``; ``stage_steps`` of the stages run). Returns the
    pretrained embedding, the same in the clustering head's geometry (directions for the cosine metric)
    and the training time.
    """
    import scvi
    import torch

    t0 = time.perf_counter()
    stages = [stage.name for stage in model.stages[:-1]]
    model.train(stages=stages, enable_progress_bar=False, **_for_stages(train_kwargs, stages))
    seconds = time.perf_counter() - t0
    head = model.module.cluster_head
    z = torch.from_numpy(model.get_latent_representation())
    head.fit_sphere(z, model.init_params_["non_kwargs"]["n_clusters"], random_state=scvi.settings.seed)
    return z.numpy(), head.project(z).numpy(), seconds


def train_in_two_parts(model, **train_kwargs) -> tuple[np.ndarray, float]:
    """Train every stage as one ``train()`` call does, split to read the pretrained embedding in between.

    ``train_kwargs`` go to both ``train`` calls. Returns the pretrained embedding in the clustering
    head's geometry (:func:`pretrain`) and the training time, the pause between the two parts left out.
    """
    _, z_head, pre_s = pretrain(model, **train_kwargs)
    t1 = time.perf_counter()
    last = model.stages[-1].name
    model.train(stages=last, enable_progress_bar=False, **_for_stages(train_kwargs, [last]))
    return z_head, pre_s + time.perf_counter() - t1


def pretrained_network(model) -> dict:
    """A copy of the module's weights without the cluster centres, which the clustering stage places anew."""
    return {name: value.clone() for name, value in model.module.state_dict().items() if "centers" not in name}


def recluster(model, pretrained: dict, seed: int, **train_kwargs) -> None:
    """Run the clustering stage again from ``pretrained`` (:func:`pretrained_network`), seeded with ``seed``.

    Runs from the same pretrained network differ only in what ``train_kwargs`` change.
    """
    import scvi

    model.module.load_state_dict(pretrained, strict=False)
    scvi.settings.seed = seed
    last = model.stages[-1].name
    model.train(stages=last, enable_progress_bar=False, **_for_stages(train_kwargs, [last]))


def _run_package_model(name: str, model_kwargs: dict | None = None, setup_kwargs: dict | None = None, **train_kwargs):
    def run(adata, k: int, seed: int):
        import scvi

        import scdmac

        model_cls = getattr(scdmac.model, name)
        b = adata.copy()
        scvi.settings.seed = seed
        model_cls.setup_anndata(b, **(setup_kwargs or {}))
        model = model_cls(b, n_clusters=k, **(model_kwargs or {}))
        z_head, train_s = train_in_two_parts(model, **train_kwargs)
        labels = np.asarray(model.predict())
        truth = adata.obs["cell_type"]
        extra = {
            "ari_input": _kmeans_ari(_model_input_pcs(b, model_cls), truth, k, seed),
            "ari_pretrained": _kmeans_ari(z_head, truth, k, seed),
            "n_kept": int((np.bincount(labels, minlength=k) >= 2).sum()),
        }
        return labels, train_s, extra

    return run


METHODS = {
    "scdmac": _run_package_model("SCDMAC"),
    "scdsec": _run_package_model("SCDSEC"),
    "pca_kmeans": run_pca_kmeans,
    "leiden": lambda adata, k, seed: run_leiden(adata, None, seed),
    "leiden_k": run_leiden,
    "scvi": run_scvi,
}


def _done(csv_path: Path) -> set[tuple[str, str, int]]:
    if not csv_path.exists():
        return set()
    runs = pd.read_csv(csv_path)
    return {(r.method, r.dataset, int(r.seed)) for r in runs.itertuples()}


def _append(csv_path: Path, row: dict) -> None:
    new = not csv_path.exists()
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    if not new:
        with csv_path.open() as fh:
            header = fh.readline().strip().split(",")
        if header != FIELDS:  # a CSV written before a column was added: rewrite it with the column empty
            pd.read_csv(csv_path).reindex(columns=FIELDS).to_csv(csv_path, index=False)
    with csv_path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _table(frame: pd.DataFrame, fmt: str = "{:.3f}", bold_max: bool = False) -> list[str]:
    lines = ["| dataset | " + " | ".join(frame.columns) + " |", "|---|" + "---:|" * len(frame.columns)]
    for ds, row in frame.iterrows():
        best = row.max()
        cells = [
            "" if pd.isna(v) else (f"**{fmt.format(v)}**" if bold_max and v == best else fmt.format(v)) for v in row
        ]
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    return lines


def _with_k(heading: str, frame: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """A section: ``heading``, then ``frame`` as a table with each dataset's number of types first."""
    frame.insert(0, "k", runs.groupby("dataset").n_types.first())
    return [heading + "\n", *_table(frame, fmt="{:.3g}"), ""]


def _seed_range(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return str(high) if low == high else f"{low}-{high}"


def summarize(csv_path: Path, methods: list[str] | None = None) -> str:
    """Markdown summary: mean ARI/NMI per half, margins to the best peer, spread, kept clusters, diagnostics."""
    runs = pd.read_csv(csv_path)
    if methods:
        runs = runs[runs.method.isin(methods)]
    grouped = runs.groupby(["dataset", "method"])
    order = [m for m in METHODS if m in set(runs.method)]
    ours = [m for m in OURS if m in order]
    peers = [m for m in PEERS if m in order]
    half_of = {ds: half for half, names in SPLIT.items() for ds in names}
    lines = []
    for metric in ("ari", "nmi"):
        wide = grouped[metric].mean().unstack()[order]
        wide = wide.loc[sorted(wide.index, key=lambda d: (list(SPLIT).index(half_of.get(d, "tuning")), d))]
        lines.append(f"### {metric.upper()} (mean over seeds)\n")
        lines += _table(wide.rename(index=lambda d: f"{d} ({half_of.get(d, '?')[0]})"), bold_max=True)
        complete = wide.dropna()
        for half, names in SPLIT.items():
            part = complete[complete.index.isin(names)]
            lines.append(
                f"| **average, {half}** ({len(part)} datasets) | " + " | ".join(f"{v:.3f}" for v in part.mean()) + " |"
            )
        lines.append(
            f"| **average, all** ({len(complete)} datasets) | " + " | ".join(f"{v:.3f}" for v in complete.mean()) + " |"
        )
        lines.append("")
        if metric == "ari" and ours and peers:
            best_peer = complete[peers].max(axis=1)
            lines.append("#### ARI margin to the best peer (" + ", ".join(peers) + "); positive: ours wins\n")
            margin = complete[ours].sub(best_peer, axis=0)
            margin["best peer"] = complete[peers].idxmax(axis=1).map(lambda m: peers.index(m))
            lines.append("| dataset | " + " | ".join(ours) + " | best peer |")
            lines.append("|---|" + "---:|" * len(ours) + "---|")
            for ds, row in margin.iterrows():
                lines.append(
                    f"| {ds} ({half_of.get(ds, '?')[0]}) | "
                    + " | ".join(f"{row[m]:+.3f}" for m in ours)
                    + f" | {peers[int(row['best peer'])]} {best_peer[ds]:.3f} |"
                )
            won = (margin[ours] > 0).sum()
            lines.append("| **datasets won** | " + " | ".join(f"{int(won[m])} of {len(margin)}" for m in ours) + " | |")
            lines.append("")
    spread = grouped["ari"].std(ddof=0).unstack()[order]
    lines.append("### ARI seed-to-seed spread (standard deviation over seeds; blank: one seed)\n")
    lines += _table(spread.where(grouped["seed"].nunique().unstack()[order] > 1))
    lines.append("")
    if ours and "n_kept" in runs:
        diag = runs[runs.method.isin(ours)].groupby(["dataset", "method"])
        frame = pd.concat(
            {
                f"{m} {col}": diag[col].mean().unstack()[m]
                for m in ours
                for col in ("ari_input", "ari_pretrained", "ari", "n_kept")
            },
            axis=1,
        )
        lines += _with_k(
            "### Where accuracy is won or lost (ARI of k-means on the model's own PCA input, on its pretrained "
            "embedding, and of the final labels; `n_kept`: final clusters of at least two cells, of k)",
            frame,
            runs,
        )
    if "n_clusters" in runs and runs.n_clusters.notna().any():
        returned = grouped["n_clusters"].mean().unstack().reindex(columns=order)
        returned = returned.loc[:, returned.notna().any()]
        lines += _with_k(
            "### Clusters returned (mean over seeds; blank: not recorded). Leiden at resolution 1 is not told "
            "k; the others are",
            returned,
            runs,
        )
    train = grouped["train_s"].median().unstack()[order]
    lines.append("### Training time (s, median over seeds; peers without training report their whole run)\n")
    lines += _table(train, fmt="{:.1f}")
    seeds = grouped["seed"].nunique().unstack()[order]
    lines.append("")
    # a range where a method has more seeds on some datasets than on others (scVI, whose training is slow)
    lines.append("Seeds per cell: " + ", ".join(f"{m}={_seed_range(seeds[m])}" for m in order))
    return "\n".join(lines)


def summary_path(csv: Path) -> Path:
    """Where the summary of ``csv`` goes: beside it, "runs" in its name read as "summary".

    ``accuracy_runs.csv`` gives ``accuracy_summary.md`` and ``floor_runs.csv`` ``floor_summary.md``, so two
    CSVs in one folder keep their own summaries.
    """
    stem = csv.stem.replace("runs", "summary") if "runs" in csv.stem else f"{csv.stem}_summary"
    return csv.with_name(f"{stem}.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="*", help="dataset file stems (default: all)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    # Every method runs every seed by default: scVI's score moves with its seed (validation half 0.440 on
    # seed 0, 0.486 on seed 1), so one seed of it is no fair peer, although its training takes 3-25
    # minutes per dataset here. ``--single-seed scvi`` gives the earlier, quicker table.
    parser.add_argument(
        "--single-seed",
        nargs="*",
        default=[],
        help="methods run with the first seed only (default: none, every method runs every seed)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="Lightning precision for our models (default: theirs); give a separate --csv, rows do not record it",
    )
    # keyword arguments for our models, as JSON; rows do not record them, so give each its own --csv
    for option, example in (
        ("model-kwargs", '{"cluster_metric": "euclidean"}'),
        ("train-kwargs", '{"batch_size": 1024}'),
        ("setup-kwargs", '{"n_pcs": 20}'),
    ):
        target = {"model": "the model", "train": "train()", "setup": "setup_anndata"}[option.split("-")[0]]
        parser.add_argument(
            f"--{option}",
            type=json.loads,
            default=None,
            help=f"JSON keyword arguments of {target} for our models, e.g. '{example}'; give a separate --csv",
        )
    args = parser.parse_args(argv)
    methods = dict(METHODS)
    if args.precision or args.model_kwargs or args.train_kwargs or args.setup_kwargs:
        train_kwargs = dict(args.train_kwargs or {})
        if args.precision:
            train_kwargs["precision"] = args.precision
        methods.update(
            {m: _run_package_model(m.upper(), args.model_kwargs, args.setup_kwargs, **train_kwargs) for m in OURS}
        )
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
                    labels, train_s, *extra = methods[method](adata, k, seed)
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
                        n_clusters=len(np.unique(labels)),
                        **{key: round(v, 4) for key, v in (extra[0] if extra else {}).items()},
                    )
                    _append(args.csv, row)
                    print(row, flush=True)
    # with --summary-only, --methods restricts the table (e.g. to leave out a model still being measured)
    table = summarize(args.csv, args.methods if args.summary_only else None)
    print(table)
    summary_path(args.csv).write_text(table + "\n")


if __name__ == "__main__":
    main()

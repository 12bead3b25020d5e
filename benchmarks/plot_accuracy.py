"""Grouped bar chart of mean ARI per dataset and method from ``results/accuracy_runs.csv``.

Usage::

    python benchmarks/plot_accuracy.py [--csv results/accuracy_runs.csv] [--out results/accuracy.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
ORDER = ["scdmac", "scdsec", "pca_kmeans", "leiden", "leiden_k", "scvi"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=HERE / "results" / "accuracy_runs.csv")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "accuracy.png")
    args = parser.parse_args(argv)
    runs = pd.read_csv(args.csv)
    table = runs.groupby(["dataset", "method"])["ari"].mean().unstack("method")
    table = table[[m for m in ORDER if m in table.columns]]
    complete = table.dropna()  # the average, as in accuracy_summary.md, over datasets every method finished
    table.loc[f"average ({len(complete)} datasets)"] = complete.mean()
    width = 0.8 / table.shape[1]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for i, method in enumerate(table.columns):
        ax.bar(np.arange(len(table)) + (i - (table.shape[1] - 1) / 2) * width, table[method], width, label=method)
    ax.set_xticks(np.arange(len(table)), [d.replace("_", " ") for d in table.index], rotation=30, ha="right")
    ax.set_ylabel("ARI (mean over seeds)")
    ax.legend(ncol=len(table.columns), frameon=False, loc="upper left", fontsize="small")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

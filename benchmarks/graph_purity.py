"""How often kNN edges join cells of the same labelled type, for several ways of building the graph.

A diagnostic, no training: for each dataset in ``../shared/data`` (and the contract check's simulated
data when ``--contract`` is given), 1,000 highly variable genes of the log-normalised counts (genes in
at least 1% of cells, as SCDSEC's setup), with or without per-gene scaling (``u``/``s``), 50, 20 or 10
principal components, Euclidean or cosine neighbours (``e``/``c``), 15 neighbours per cell. The value
is the fraction of edges whose two cells share a label. Purity is not a stand-in for clustering
accuracy (method notes, SCDSEC): nothing is chosen on these numbers.

Usage::

    python benchmarks/graph_purity.py --contract > benchmarks/results/graph_purity_2026-12-05/purity.md
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from accuracy import DEFAULT_DATA


def purity(labels: np.ndarray, coords: np.ndarray, n_neighbors: int = 15) -> float:
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(coords).kneighbors(coords, return_distance=False)[:, 1:]
    return float((labels[idx] == labels[:, None]).mean())


def scan(counts, labels: np.ndarray) -> dict[str, float]:
    from sklearn.preprocessing import normalize

    from scdmac.data._preprocess import pca, selected_log_expression

    # SCDSEC's own gene selection: genes in at least 1% of cells, then the 1,000 most variable
    min_cells = max(1, int(np.ceil(0.01 * counts.shape[0])))
    X = selected_log_expression(counts, 1000, min_cells)[1].toarray()
    sd = X.std(0)
    scaled = np.clip((X - X.mean(0)) / np.where(sd > 0, sd, 1.0), -10, 10)
    out = {}
    for tag, M in (("u", X), ("s", scaled)):
        pcs = pca(M, 50, 0)
        for n_pcs in (50, 20, 10):
            for metric in ("e", "c"):
                coords = pcs[:, :n_pcs] if metric == "e" else normalize(pcs[:, :n_pcs])
                out[f"{tag}{n_pcs}{metric}"] = purity(labels, coords)
    return out


def main() -> None:
    import anndata as ad

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--contract", action="store_true", help="also the contract check's simulated data")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sets = []
    if args.contract:
        sys.path.insert(0, str(args.data.parent / "tools"))
        from contract_data import simulate

        sets.append(("contract", simulate(n_cells=500, n_genes=600, n_clusters=4, seed=1), "truth"))
    sets += [(p.stem, ad.read_h5ad(p), "cell_type") for p in sorted(args.data.glob("*.h5ad"))]
    rows = []
    for name, adata, key in sets:
        scores = scan(adata.X, adata.obs[key].astype(str).to_numpy())
        if not rows:
            rows.append("| dataset | " + " | ".join(scores) + " |")
            rows.append("|---|" + "---:|" * len(scores))
        rows.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in scores.values()) + " |")
        print(rows[-1] if len(rows) > 3 else "\n".join(rows), flush=True)


if __name__ == "__main__":
    main()

"""Wall time and peak memory of SCDMAC's default training on simulated data of growing size.

Each size runs in its own process so its peak resident memory is its own. Prints a markdown
table and writes it (and a CSV) under ``benchmarks/results/``.

Usage::

    python benchmarks/scale.py                      # 50,000 cells × 2,000 genes
    python benchmarks/scale.py --cells 10000 25000 50000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _one(model_name: str, n_cells: int, n_genes: int, seed: int) -> dict:
    import scvi

    import scdmac

    t0 = time.perf_counter()
    adata = scdmac.data.simulate(n_cells=n_cells, n_genes=n_genes, n_clusters=10, seed=seed)
    t_sim = time.perf_counter() - t0
    model_cls = getattr(scdmac.model, model_name)
    scvi.settings.seed = seed
    t0 = time.perf_counter()
    model_cls.setup_anndata(adata, layer="counts")
    t_setup = time.perf_counter() - t0
    model = model_cls(adata, n_clusters=10)
    t0 = time.perf_counter()
    model.train(enable_progress_bar=False)
    t_train = time.perf_counter() - t0
    from sklearn.metrics import adjusted_rand_score

    return {
        "model": model_name,
        "n_cells": n_cells,
        "n_genes": n_genes,
        "simulate_s": round(t_sim, 1),
        "setup_s": round(t_setup, 1),
        "train_s": round(t_train, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "ari": round(adjusted_rand_score(adata.obs["cell_type"], model.predict()), 3),
        "epochs": {k: len(v) for k, v in model.history.items() if k.endswith("_loss")},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SCDMAC")
    parser.add_argument("--cells", nargs="*", type=int, default=[50_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="markdown output (default: results/scale_<model>.md)")
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(_one(args.model, args.cells[0], args.genes, args.seed)))
        return
    rows = []
    for n in args.cells:
        cmd = [
            sys.executable,
            __file__,
            "--_child",
            "--model",
            args.model,
            "--cells",
            str(n),
            "--genes",
            str(args.genes),
            "--seed",
            str(args.seed),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    cols = ["model", "n_cells", "n_genes", "simulate_s", "setup_s", "train_s", "peak_rss_gib", "ari", "epochs"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    out = args.out or HERE / "results" / f"scale_{args.model.lower()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/scale.py --model {args.model} --cells {' '.join(map(str, args.cells))}"
    out.write_text(f"Command: {command}\n\n{table}\n")


if __name__ == "__main__":
    main()

"""Training time and ARI of a model in float32 and under Lightning's bfloat16 mixed precision.

One run per precision, one after the other in this process (run it alone: two trainings sharing two
cores each run several times slower). Labels score the run only; nothing is chosen by them.

Usage::

    python benchmarks/precision.py --model SCDSEC --dataset pbmc_10x_4k_top2000 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def main() -> None:
    import anndata as ad
    import scvi

    import scdmac
    from scdmac.metrics import agreement

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SCDSEC", choices=["SCDMAC", "SCDSEC"])
    parser.add_argument("--dataset", default="pbmc_10x_4k_top2000")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precisions", nargs="*", default=["32-true", "bf16-mixed"])
    args = parser.parse_args()
    scvi.settings.verbosity = logging.WARNING  # the table alone on stdout
    counts = ad.read_h5ad(args.data / f"{args.dataset}.h5ad")
    k = counts.obs["cell_type"].nunique()
    model_cls = getattr(scdmac.model, args.model)
    print("| model | dataset | seed | precision | train (s) | ARI |")
    print("|---|---|---:|---|---:|---:|")
    for precision in args.precisions:
        adata = counts.copy()
        scvi.settings.seed = args.seed
        model_cls.setup_anndata(adata)
        model = model_cls(adata, n_clusters=k)
        t0 = time.perf_counter()
        model.train(enable_progress_bar=False, precision=precision)
        seconds = time.perf_counter() - t0
        ari = agreement(adata.obs["cell_type"], model.predict())["ari"]
        print(f"| {args.model} | {args.dataset} | {args.seed} | {precision} | {seconds:.1f} | {ari:.3f} |", flush=True)


if __name__ == "__main__":
    main()

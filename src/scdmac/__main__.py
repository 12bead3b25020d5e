"""Command line: ``python -m scdmac demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scdmac", description="Deep clustering of single-cell RNA-seq counts.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="cluster simulated cell types; print ARI/NMI; write h5ad and UMAP")
    demo.add_argument("--out", default="scdmac_demo_output", help="output folder")
    demo.add_argument("--n-cells", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        run_demo(args.out, n_cells=args.n_cells, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time and memory of one SCDSEC whole-graph pass, the graph taken whole or in row blocks.

A whole-graph pass embeds every cell through the fused encoder over the full cell graph: the
clustering stage makes one per target refresh, and the outputs one more. It holds the most memory
of anything SCDSEC does at scale. Each configuration runs in its own process on a random
15-neighbour graph and random standardised input (the weights are untrained: time and memory do
not depend on their values), and reports the pass's wall time and the resident memory it adds
above what the input, graph and network already hold.

Usage::

    python benchmarks/whole_graph_pass.py --cells 100000 200000
    python benchmarks/whole_graph_pass.py --cells 100000 --block-rows 0 4096 16384

``--block-rows 0`` takes the graph as one block (the computation before row blocks). Writes
``benchmarks/results/whole_graph_pass.md`` and ``.csv`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ["n_cells", "block_rows", "threads", "pass_s", "added_rss_gib", "base_rss_gib"]


def _one(n_cells: int, block_rows: int, threads: int, n_genes: int, widths: list[int]) -> dict:
    """Run in the child process: build, then time one pass while sampling resident memory."""
    import numpy as np
    import psutil
    import torch

    from scdmac.data import CellGraph
    from scdmac.module import FusionEncoder

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    graph = CellGraph(rng.integers(0, n_cells, size=(n_cells, 15)))
    adj = graph.normalized(block_rows=block_rows if block_rows > 0 else n_cells)
    x = torch.from_numpy(rng.standard_normal((n_cells, n_genes), dtype=np.float32))
    torch.manual_seed(0)
    encoder = FusionEncoder(n_genes, widths[:-1], widths[-1]).eval()
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    with torch.inference_mode():
        z = encoder(x, adj)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    assert z.shape == (n_cells, widths[-1])
    return {
        "n_cells": n_cells,
        "block_rows": block_rows,
        "threads": threads,
        "pass_s": round(elapsed, 2),
        "added_rss_gib": round((peak[0] - base) / 2**30, 2),
        "base_rss_gib": round(base / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[100_000])
    parser.add_argument("--block-rows", type=int, nargs="+", default=[0, 4096])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--genes", type=int, default=1000, help="encoder input width (SCDSEC's default genes)")
    parser.add_argument("--widths", type=int, nargs="+", default=[500, 500, 2000, 10], help="layers, latent last")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "whole_graph_pass")
    parser.add_argument("--child", type=str, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_one(**spec)))
        return
    rows = []
    for n_cells in args.cells:
        for block_rows in args.block_rows:
            spec = {
                "n_cells": n_cells,
                "block_rows": block_rows,
                "threads": args.threads,
                "n_genes": args.genes,
                "widths": args.widths,
            }
            result = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=True
            )
            row = json.loads(result.stdout.strip().splitlines()[-1])
            print(row, flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    widths = "-".join(map(str, args.widths))
    lines = [
        f"# One SCDSEC whole-graph pass ({args.genes} inputs, layers {widths}, 15 neighbours, {args.threads} threads)",
        "",
        "`block rows` whole: the graph as one block. `added`: resident memory the pass adds above the input,",
        "graph and network.",
        "",
        "| cells | block rows | pass (s) | added (GiB) | before the pass (GiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        block = r["block_rows"] or "whole"
        lines.append(f"| {r['n_cells']:,} | {block} | {r['pass_s']} | {r['added_rss_gib']} | {r['base_rss_gib']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

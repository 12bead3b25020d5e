"""The ``scdmac`` command line: ``scdmac cluster IN.h5ad OUT.h5ad`` for pipelines, ``scdmac demo`` to try it."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("scdmac", "scdsec")


class InputError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scdmac", description="Deep clustering of single-cell RNA-seq counts.")
    sub = parser.add_subparsers(dest="command", required=True)

    cluster = sub.add_parser(
        "cluster",
        help="cluster the raw counts of an .h5ad file and write the results to a new .h5ad",
        description="Cluster raw counts with SCDMAC or SCDSEC and write the input plus the results "
        "(obsm['X_<model>'], obs['<model>_cluster'], obsm['<model>_soft'] and the setup keys) to OUT.",
    )
    cluster.add_argument("input", type=Path, help="AnnData (.h5ad) of raw counts")
    cluster.add_argument("output", type=Path, help="where to write the clustered AnnData (.h5ad)")
    cluster.add_argument("--model", choices=MODELS, default="scdmac", help="method (default: scdmac)")
    cluster.add_argument("--n-clusters", type=int, default=None, help="number of clusters (default: estimated)")
    cluster.add_argument("--layer", default=None, help="layer holding the raw counts (default: X)")
    cluster.add_argument("--seed", type=int, default=0, help="scvi.settings.seed (default: 0)")
    cluster.add_argument("--max-epochs", type=int, default=None, help="epochs per stage (default: the model's)")
    cluster.add_argument("--batch-size", type=int, default=None, help="cells per minibatch (default: the model's)")
    cluster.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu (default: auto)")
    cluster.add_argument("--n-top-genes", type=int, default=None, help="highly variable genes modelled")
    cluster.add_argument("--n-neighbors", type=int, default=None, help="neighbours per cell in the kNN graph")
    cluster.add_argument("--save-model", type=Path, default=None, metavar="DIR", help="also save the trained model")
    cluster.add_argument("--overwrite", action="store_true", help="replace OUT (and --save-model DIR) if present")
    cluster.add_argument("--no-progress", action="store_true", help="hide the training progress bar")

    demo = sub.add_parser("demo", help="cluster simulated cell types; print ARI/NMI; write h5ad and UMAP")
    demo.add_argument("--out", default="scdmac_demo_output", help="output folder")
    demo.add_argument("--n-cells", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=0)
    return parser


def _check_paths(args: argparse.Namespace) -> None:
    if not args.input.is_file():
        raise InputError(f"input file {str(args.input)!r} not found")
    if args.output.exists() and not args.overwrite:
        raise InputError(f"output {str(args.output)!r} exists: pass --overwrite to replace it")
    if not args.output.parent.is_dir():
        raise InputError(f"output folder {str(args.output.parent)!r} does not exist")
    if args.save_model is not None and args.save_model.exists() and not args.overwrite:
        raise InputError(f"model folder {str(args.save_model)!r} exists: pass --overwrite to replace it")


def _read(path: Path):
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a file that is not an AnnData
        raise InputError(f"cannot read {str(path)!r} as an .h5ad AnnData ({type(err).__name__}: {err})") from err


def _write_atomically(adata, output: Path) -> None:
    """Write to a temporary file beside ``output`` and move it into place: never a half-written file."""
    handle, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cluster(args: argparse.Namespace) -> None:
    """Run ``scdmac cluster``: read, set up, train, write (see ``scdmac cluster --help``)."""
    import scvi

    from . import model as models

    _check_paths(args)
    start = time.perf_counter()
    adata = _read(args.input)
    model_cls = getattr(models, args.model.upper())
    setup = {k: v for k, v in {"n_top_genes": args.n_top_genes, "n_neighbors": args.n_neighbors}.items() if v}
    train = {"accelerator": args.accelerator, "enable_progress_bar": not args.no_progress}
    train.update({k: v for k, v in {"max_epochs": args.max_epochs, "batch_size": args.batch_size}.items() if v})
    print(
        f"scdmac: {adata.n_obs} cells × {adata.n_vars} genes from {args.input}; model {model_cls.__name__}",
        file=sys.stderr,
    )
    try:
        scvi.settings.seed = args.seed
        model_cls.setup_anndata(adata, layer=args.layer, **setup)
        trained = model_cls(adata, n_clusters=args.n_clusters)
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(str(err.args[0]) if err.args else str(err)) from err
    trained.train(**train)
    if args.save_model is not None:
        trained.save(args.save_model, overwrite=args.overwrite)
    _write_atomically(adata, args.output)
    print(
        f"scdmac: {trained.n_clusters_} clusters for {adata.n_obs} cells written to {args.output} "
        f"({time.perf_counter() - start:.0f} s)",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scdmac`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "cluster":
            cluster(args)
        else:
            from ._demo import run_demo

            run_demo(args.out, n_cells=args.n_cells, seed=args.seed)
    except InputError as err:
        print(f"scdmac: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0

"""The ``scdmac`` command line: ``scdmac cluster IN.h5ad OUT.h5ad`` for pipelines, ``scdmac demo`` to try it.

``scdmac cluster`` reads raw counts, trains :class:`~scdmac.model.SCDMAC` or :class:`~scdmac.model.SCDSEC` and
writes the input plus the keys the Python API writes (``obsm['X_<model>']``, ``obs['<model>_cluster']``,
``obsm['<model>_soft']`` and the setup keys) to ``OUT``. ``--batch-key NAME`` names the ``adata.obs`` column of
sample or batch labels, passed to ``setup_anndata(batch_key=NAME)``.

- Problems with the input (a missing or unreadable file, a missing layer or ``--batch-key`` column, data that
  are not raw counts, an existing output without ``--overwrite``, a missing output folder, an unusable
  accelerator) end with exit status 2 and one line ``scdmac: error: ...`` on stderr.
- ``--help``, usage errors and the checks that need no training (paths; ``--layer`` and ``--batch-key``,
  looked up in the file's layer and ``obs`` column names with h5py) answer at once: torch, scvi-tools and
  Lightning are imported only when training starts (``import scdmac`` imports none of them).
- ``OUT`` (and ``--save-model DIR``) are written under temporary names beside their targets and moved into
  place only once everything succeeded: a failed or interrupted run leaves neither a half-written file nor a
  temporary one.
- Progress (Lightning's bar, a line per stage) goes to stderr and the one-line summary to stdout.
  Lightning's own notices and warnings (accelerator availability, logging tips) are kept out.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

MODELS = ("scdmac", "scdsec")
#: exit status of usage and input errors (argparse's own)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: loggers whose INFO lines (accelerator availability, tips, "Seed set to") are not progress
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


class InputError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _at_least(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer of at least {minimum}, got {value}")
        return value

    return parse


#: what train() requires: a minibatch of one cell has no batch statistics
_batch_size = _at_least(2)


def _target_sum(text: str) -> float | str:
    if text == "median":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'median', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'median', got {text!r}")
    return value


def _seed(text: str) -> int:
    value = _integer(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {2**32 - 1}, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scdmac", description="Deep clustering of single-cell RNA-seq counts.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{cluster,demo}")

    cluster = sub.add_parser(
        "cluster",
        help="cluster the raw counts of an .h5ad file and write the results to a new .h5ad",
        description="Cluster raw counts with SCDMAC or SCDSEC and write the input plus the results "
        "(obsm['X_<model>'], obs['<model>_cluster'], obsm['<model>_soft'] and the setup keys) to OUT. "
        "Input errors exit with status 2 and one line on stderr; OUT appears only when the run succeeded.",
    )
    cluster.add_argument("input", type=Path, help="AnnData (.h5ad) of raw counts")
    cluster.add_argument("output", type=Path, help="where to write the clustered AnnData (.h5ad)")
    cluster.add_argument("--model", choices=MODELS, default="scdmac", help="method (default: scdmac)")
    cluster.add_argument("--n-clusters", type=int, default=None, help="number of clusters (default: estimated)")
    cluster.add_argument("--layer", default=None, help="layer holding the raw counts (default: X)")
    cluster.add_argument(
        "--batch-key",
        default=None,
        metavar="NAME",
        help="obs column of sample or batch labels, passed to setup_anndata(batch_key=NAME) (default: none)",
    )
    cluster.add_argument("--seed", type=_seed, default=0, help="scvi.settings.seed (default: 0)")
    cluster.add_argument(
        "--max-epochs", type=_positive_int, default=None, help="epochs per stage (default: the model's)"
    )
    cluster.add_argument(
        "--batch-size", type=_batch_size, default=None, help="cells per minibatch, 2 or more (default: the model's)"
    )
    cluster.add_argument(
        "--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, cuda, mps (default: auto)"
    )
    cluster.add_argument(
        "--precision",
        choices=("32-true", "bf16-mixed"),
        default=None,
        help="Lightning precision of the training (default: bf16-mixed on a CPU with AMX, else 32-true)",
    )
    cluster.add_argument(
        "--n-top-genes", type=_positive_int, default=None, help="highly variable genes modelled (default: the model's)"
    )
    cluster.add_argument(
        "--n-neighbors",
        type=_positive_int,
        default=None,
        help="neighbours per cell in the kNN graph (default: the model's)",
    )
    cluster.add_argument(
        "--target-sum",
        type=_target_sum,
        default=None,
        metavar="COUNTS",
        help="total counts each cell is normalised to before log1p, or 'median' for the median library size "
        "(default: the model's, 10000)",
    )
    cluster.add_argument(
        "--cluster-init",
        choices=("kmeans", "leiden"),
        default=None,
        help="how the clustering stage places its centres (default: the model's)",
    )
    cluster.add_argument(
        "--cluster-metric",
        choices=("cosine", "euclidean"),
        default=None,
        help="where the clustering stage measures distances: the embedding's directions or the embedding itself "
        "(default: the model's; SCDMAC cosine, SCDSEC euclidean). On tissue where one cell type holds a third "
        "or more of the cells, try euclidean with SCDMAC",
    )
    cluster.add_argument("--save-model", type=Path, default=None, metavar="DIR", help="also save the trained model")
    cluster.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep a checkpoint in DIR after each stage; the same command again continues an interrupted run",
    )
    cluster.add_argument("--overwrite", action="store_true", help="replace OUT (and --save-model DIR) if present")
    cluster.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar and stage lines (errors and summary stay)"
    )

    demo = sub.add_parser(
        "demo",
        help="cluster simulated cell types; print ARI/NMI and the time taken; write h5ad and UMAP",
        description="Simulate 8 cell types, cluster them with SCDMAC, print ARI/NMI against the truth and how "
        "long it took, and write OUT/demo.h5ad and OUT/demo_umap.png. The default takes well under a minute "
        "on 2 CPU cores.",
    )
    demo.add_argument("--out", default="scdmac_demo_output", help="output folder (default: scdmac_demo_output)")
    # 8 simulated types need a few dozen cells each, and a fifth of the genes mark each type
    demo.add_argument(
        "--n-cells", type=_at_least(200), default=2000, help="simulated cells, at least 200 (default: 2000)"
    )
    demo.add_argument("--n-genes", type=_at_least(50), default=500, help="simulated genes, at least 50 (default: 500)")
    demo.add_argument("--seed", type=_seed, default=0, help="simulation and training seed (default: 0)")
    demo.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="CPU threads (default: 1; the demo's small networks gain nothing from more)",
    )
    return parser


# ---- checks before any work ----------------------------------------------------------------------------
def _check_target(path: Path, what: str, overwrite: bool, folder: bool) -> None:
    """``path`` can be written: its folder exists and is writable, and it is absent unless ``overwrite``."""
    if path.exists():
        if path.is_dir() != folder:
            is_, wanted = ("a file", "a folder") if folder else ("a folder", "a file")
            raise InputError(f"{what} {str(path)!r} is {is_}, not {wanted}")
        if not overwrite:
            raise InputError(f"{what} {str(path)!r} exists: pass --overwrite to replace it")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"folder {str(parent)!r} for the {what} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"folder {str(parent)!r} for the {what} is not writable")
    # the result is first written under a longer temporary name beside the target
    longest = len(os.fsencode(_temporary(path).name))
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if longest > name_max:
        raise InputError(
            f"{what} name {path.name[:40]!r}... is too long for this file system: "
            f"use at most {name_max - (longest - len(os.fsencode(path.name)))} bytes"
        )
    # access() trusts permission bits; a read-only or full file system only shows when writing
    try:
        probe = _temporary(path)
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise InputError(f"cannot write in folder {str(parent)!r} for the {what}: {err.strerror or err}") from err


def _check_paths(args: argparse.Namespace) -> None:
    if not args.input.exists():
        raise InputError(f"input file {str(args.input)!r} not found")
    if not args.input.is_file():
        raise InputError(f"input {str(args.input)!r} is not a file")
    if args.output.exists() and args.output.resolve() == args.input.resolve():
        raise InputError(f"output {str(args.output)!r} is the input file: write the results to a new file")
    _check_target(args.output, "output", args.overwrite, folder=False)
    if args.save_model is not None:
        _check_target(args.save_model, "--save-model folder", args.overwrite, folder=True)
    if args.resume is not None:
        if args.resume.exists() and not args.resume.is_dir():
            raise InputError(f"--resume {str(args.resume)!r} is a file, not a folder")
        if not args.resume.parent.is_dir():
            raise InputError(f"folder {str(args.resume.parent)!r} for --resume does not exist")


def _check_accelerator(name: str) -> None:
    """Fail before reading data when Lightning cannot use ``name`` (unknown, or no such device here)."""
    import lightning.pytorch as pl
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        pl.Trainer(accelerator=name, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    except (ValueError, MisconfigurationException) as err:
        raise InputError(f"--accelerator {name}: {err}") from err


def _unreadable(path: Path, err: Exception) -> InputError:
    return InputError(f"cannot read {str(path)!r} as an .h5ad AnnData ({type(err).__name__}: {err})")


def _peek(path: Path) -> tuple[list[str], list[str]] | None:
    """The layer names and ``obs`` column names of an .h5ad file, read with h5py alone (no matrix is read).

    ``None`` when the file is HDF5 but not laid out as this code expects (an old AnnData version): the
    same checks are then made on the AnnData once it is read.
    """
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as err:  # not an HDF5 file, or not readable
        raise _unreadable(path, err) from err
    try:
        with file:
            layers, obs = file.get("layers"), file.get("obs")
            if layers is not None and not isinstance(layers, h5py.Group):
                return None
            if not isinstance(obs, h5py.Group) or obs.attrs.get("encoding-type") != "dataframe":
                return None
            order = obs.attrs["column-order"]
            columns = [order] if isinstance(order, str | bytes) else list(order)
            return [_text(name) for name in (layers.keys() if layers is not None else ())], list(map(_text, columns))
    except Exception:  # whatever h5py meets in a damaged file: reading the AnnData reports it
        return None


def _text(name: object) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _names(names: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(map(repr, names[:most])) or "none"
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _check_contents(args: argparse.Namespace, layers: Sequence[str], columns: Sequence[str]) -> str | None:
    """The layer to read counts from (``None``: X), after checking ``--layer`` and ``--batch-key`` exist."""
    # "X" names adata.X unless the file has a layer of that name
    layer = None if args.layer == "X" and "X" not in layers else args.layer
    if layer is not None and layer not in layers:
        raise InputError(
            f"Layer {layer!r} not found in {str(args.input)!r} (layers: {_names(layers)}). "
            "--layer NAME picks the layer holding raw counts; without it, X is used."
        )
    if args.batch_key is not None and args.batch_key not in columns:
        raise InputError(
            f"--batch-key {args.batch_key!r}: no column {args.batch_key!r} in adata.obs of {str(args.input)!r} "
            f"(columns: {_names(columns)})"
        )
    return layer


def _read(path: Path):
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a file that is not an AnnData
        raise _unreadable(path, err) from err


# ---- output ---------------------------------------------------------------------------------------------
def _temporary(target: Path) -> Path:
    """A hidden name beside ``target`` that no one else uses (created later, with the user's umask)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _remove(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _publish(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing folder at ``target`` is replaced (files are replaced atomically)."""
    if target.is_dir():
        old = _temporary(target)
        os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)


# ---- console --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _console(progress: bool) -> Iterator[None]:
    """Send training output to stderr: Lightning's bar and the package's stage lines, without Lightning's notices.

    Everything is restored on exit, so :func:`main` can run in a Python session.
    """
    package = logging.getLogger("scdmac")
    quiet = list(_LIGHTNING_LOGGERS) + ([] if progress else ["scvi"])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scdmac: %(message)s"))
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        # training itself keeps Lightning's known harmless warnings out (scdmac._logging.HARMLESS_WARNINGS);
        # any other warning is the user's business and shows
        # the heavy stack, first needed here: Lightning and scvi-tools set their loggers' levels on import
        import lightning.pytorch  # noqa: F401
        import scvi  # noqa: F401

        from ._logging import package_logger

        package_logger()  # configured now, so the model modules' import does not add scvi's handler later
        levels = {name: logging.getLogger(name).level for name in quiet}
        package_level, package_handlers = package.level, list(package.handlers)
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
        # the package's lines go to stderr as "scdmac: ..." here, not through scvi-tools' console
        for other in package_handlers:
            package.removeHandler(other)
        if progress:
            package.addHandler(handler)
            package.setLevel(logging.INFO)
        else:
            package.setLevel(logging.WARNING)
        try:
            yield
        finally:
            package.removeHandler(handler)
            for other in package_handlers:
                package.addHandler(other)
            package.setLevel(package_level)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"scdmac: {message}", file=sys.stderr, flush=True)


# ---- commands -------------------------------------------------------------------------------------------
def cluster(args: argparse.Namespace) -> None:
    """Run ``scdmac cluster``: check, read, set up, train, write (see ``scdmac cluster --help``)."""
    start = time.perf_counter()
    progress = not args.no_progress
    _check_paths(args)
    contents = _peek(args.input)
    if contents is not None:
        _check_contents(args, *contents)
    tmp_output = tmp_model = None
    try:
        with _console(progress):
            import scvi

            from . import model as models
            from .data._validate import check_train_args
            from .model._files import CheckpointError

            _check_accelerator(args.accelerator)
            model_cls = getattr(models, args.model.upper())
            try:  # the checks train() makes, before any data are read
                check_train_args(args.max_epochs, args.batch_size or model_cls._default_batch_size)
            except ValueError as err:
                raise InputError(f"{err} (--max-epochs, --batch-size)") from err
            adata = _read(args.input)
            layer = _check_contents(args, list(adata.layers.keys()), [str(c) for c in adata.obs.columns])
            where = "X" if layer is None else f"layer {layer!r}"
            _say(progress, f"read {adata.n_obs} cells × {adata.n_vars} genes from {args.input} ({where})")
            setup = {"n_top_genes": args.n_top_genes, "n_neighbors": args.n_neighbors, "batch_key": args.batch_key}
            setup = {k: v for k, v in setup.items() if v is not None}
            if args.target_sum is not None:  # "median" is setup_anndata's None
                setup["target_sum"] = None if args.target_sum == "median" else args.target_sum
            train = {
                "max_epochs": args.max_epochs,
                "batch_size": args.batch_size,
                "cluster_init": args.cluster_init,
                "precision": args.precision,
            }
            train = {k: v for k, v in train.items() if v is not None}
            try:
                scvi.settings.seed = args.seed
                model_cls.setup_anndata(adata, layer=layer, **setup)
                model_kwargs = {} if args.cluster_metric is None else {"cluster_metric": args.cluster_metric}
                trained = model_cls(adata, n_clusters=args.n_clusters, **model_kwargs)
            except (KeyError, ValueError) as err:  # the package's validation: messages name problem and fix
                message = str(err.args[0]) if err.args else str(err)
                if "layer" in message:  # its fix is phrased for Python
                    message += " On the command line: --layer NAME picks the layer; without it, X is used."
                raise InputError(message) from err
            _say(progress, f"training {model_cls.__name__} on {args.accelerator}")
            try:
                trained.train(
                    accelerator=args.accelerator, enable_progress_bar=progress, checkpoint_dir=args.resume, **train
                )
            except CheckpointError as err:  # raised before any training, naming the folder and the fix
                raise InputError(f"--resume: {err}") from err

            _say(progress, f"writing {args.output}")
            tmp_output = _temporary(args.output)
            adata.write_h5ad(tmp_output)
            if args.save_model is not None:
                tmp_model = _temporary(args.save_model)
                trained.save(tmp_model, overwrite=True)
                _publish(tmp_model, args.save_model)
            _publish(tmp_output, args.output)
    finally:
        _remove(tmp_output)
        _remove(tmp_model)
    found = adata.obs[trained.cluster_key].nunique()
    source = "requested" if args.n_clusters is not None else "estimated"
    print(
        f"scdmac: {model_cls.__name__} put {adata.n_obs} cells in {found} cluster{'s' * (found != 1)} "
        f"({trained.n_clusters_} {source}); wrote {args.output} in {time.perf_counter() - start:.1f} s",
        flush=True,
    )


def _error(message: str) -> None:
    print(f"scdmac: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scdmac`` command (and ``python -m scdmac``); returns the exit status.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error argparse has printed
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    try:
        if args.command == "cluster":
            cluster(args)
        else:
            if Path(args.out).exists() and not Path(args.out).is_dir():
                raise InputError(f"--out {args.out!r} is a file: the demo writes a folder, so pass a folder path.")
            from ._demo import run_demo
            from ._logging import quiet_loggers

            with quiet_loggers(*_LIGHTNING_LOGGERS):  # no "Seed set to ..." among the demo's lines
                run_demo(args.out, n_cells=args.n_cells, n_genes=args.n_genes, seed=args.seed, threads=args.threads)
    except InputError as err:
        _error(str(err))
        return EXIT_USAGE
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns Ctrl-C during a fit into SystemExit(1) and ignores SIGINT from then on
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _error("interrupted")
        return EXIT_INTERRUPTED
    return 0

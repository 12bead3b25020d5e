"""Deep clustering of single-cell RNA-seq counts (SCDMAC, SCDSEC) built the scvi-tools way."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import data, metrics, model, module, pl, tl, train

try:
    __version__ = version("scdmac")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["data", "metrics", "model", "module", "pl", "tl", "train", "__version__"]

"""Deep clustering of single-cell RNA-seq counts (SCDMAC, SCDSEC) built the scvi-tools way.

The submodules (:mod:`~scdmac.data`, :mod:`~scdmac.metrics`, :mod:`~scdmac.model`, :mod:`~scdmac.module`,
:mod:`~scdmac.pl`, :mod:`~scdmac.tl`, :mod:`~scdmac.train`) are imported on first use, as in scanpy and
scvi-tools: ``import scdmac`` does not load torch, scvi-tools or scanpy, so the ``scdmac`` command answers
``--help`` and usage errors at once.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers and IDEs see the submodules as attributes
    from . import data, metrics, model, module, pl, tl, train

try:
    __version__ = version("scdmac")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

_SUBMODULES = ("data", "metrics", "model", "module", "pl", "tl", "train")

__all__ = ["data", "metrics", "model", "module", "pl", "tl", "train", "__version__"]


def __getattr__(name: str) -> Any:
    """Import a submodule the first time it is used (PEP 562): ``scdmac.model`` loads torch and scvi-tools."""
    if name in _SUBMODULES:
        submodule = importlib.import_module(f".{name}", __name__)
        globals()[name] = submodule  # the import has set it already; later look-ups skip this function
        return submodule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""What training prints: the package's own lines through scvi-tools' console, Lightning's notices kept out."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Lightning's loggers whose INFO lines are notices, not progress: accelerator availability ("GPU
#: available: False"), the litlogger tip, "Seed set to", "`Trainer.fit` stopped: ..."
LIGHTNING_NOTICE_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed")

#: Warnings a default run raises that say nothing about the user's data or settings, each with its reason.
HARMLESS_WARNINGS = (
    # every stage runs the sub-networks it does not train in eval mode, on purpose (scdmac.train.Stage)
    (r"Found \d+ module\(s\) in eval mode at the start of training", UserWarning),
    # small data have fewer batches per epoch than Lightning's logging interval; metrics are per epoch
    (r"The number of training batches \(\d+\) is smaller than the logging interval", UserWarning),
    # Lightning 2.6's own use of torch's pytree API (lightning/pytorch/utilities/_pytree.py)
    (r".*isinstance\(treespec, LeafSpec\)", Warning),
    # stages have no validation loop unless train(validation_size=...) asks for one
    (r"You defined a `validation_step` but have no `val_dataloader`", UserWarning),
)


def package_logger() -> logging.Logger:
    """The ``scdmac`` logger, printing through scvi-tools' console handler at scvi-tools' verbosity.

    So stage starts, the estimated number of clusters and why a stage stopped show by default, as
    scvi-tools' own lines do; ``scvi.settings.verbosity`` (or the ``scdmac`` logger's level) changes it.
    """
    logger = logging.getLogger("scdmac")
    if not getattr(logger, "_scdmac_configured", False):
        import scvi  # noqa: F401  (sets up its console handler on import)

        source = logging.getLogger("scvi")
        for handler in source.handlers:
            logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(source.level or logging.INFO)
        # like scvi-tools' logger: its handler prints, the root logger does not print again
        logger.propagate = not source.handlers
        logger._scdmac_configured = True  # type: ignore[attr-defined]
    return logger


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Keep Lightning's notices and the known harmless warnings out of a training run; restore after.

    Only the named loggers are raised to WARNING and only :data:`HARMLESS_WARNINGS` are filtered:
    any other warning still shows.
    """
    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import: change them after)

    with warnings.catch_warnings(), quiet_loggers(*LIGHTNING_NOTICE_LOGGERS):
        for message, category in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the named loggers to WARNING for the duration (their notices are not the user's business)."""
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)

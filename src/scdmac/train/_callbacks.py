"""Unsupervised stopping rules (never the labels)."""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback


class RelativePlateau(Callback):
    """Stop a stage when its epoch loss has not improved by ``rel_tol`` (relative) for ``patience`` epochs.

    Lightning's :class:`~lightning.pytorch.callbacks.EarlyStopping` takes an absolute ``min_delta``;
    stage losses differ by orders of magnitude between datasets, so the tolerance here is relative.

    Parameters
    ----------
    monitor
        Logged epoch metric.
    rel_tol
        Smallest relative improvement that counts.
    patience
        Epochs without such an improvement before stopping.
    min_epochs
        Never stop before this many epochs (default: ``patience``).
    """

    def __init__(self, monitor: str, rel_tol: float = 1e-3, patience: int = 10, min_epochs: int | None = None):
        if patience < 1:
            raise ValueError(f"early_stopping_patience must be at least 1, got {patience}.")
        self.monitor = monitor
        self.rel_tol = rel_tol
        self.patience = patience
        self.min_epochs = patience if min_epochs is None else min_epochs
        self.best = math.inf
        self.wait = 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if value < self.best - self.rel_tol * abs(self.best) or not math.isfinite(self.best):
            self.best = value
            self.wait = 0
        else:
            self.wait += 1
        if self.wait >= self.patience and trainer.current_epoch + 1 >= self.min_epochs:
            trainer.should_stop = True

"""Unsupervised stopping rules (never the labels)."""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ProgressBar as ProgressBarBase
from scvi.train._progress import ProgressBar
from scvi.utils import track


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
        Epochs without such an improvement before stopping; only epochs where ``monitor`` was computed
        count (with ``check_val_every_n_epoch=n``, a validation loss counts every n-th epoch).
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
        self._last_seen = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metric = trainer.callback_metrics.get(self.monitor)
        # the same tensor as last epoch: the metric was not computed again (a validation loss checked every
        # few epochs), so this epoch says nothing about improvement
        if metric is None or metric is self._last_seen:
            return
        self._last_seen = metric
        value = float(metric)
        if value < self.best - self.rel_tol * abs(self.best) or not math.isfinite(self.best):
            self.best = value
            self.wait = 0
        else:
            self.wait += 1
        if self.wait >= self.patience and trainer.current_epoch + 1 >= self.min_epochs:
            trainer.should_stop = True
            if hasattr(pl_module, "stop_reason"):  # a stage plan: it says why the stage stopped
                pl_module.stop_reason = (
                    f"{self.monitor} improved by less than {self.rel_tol:g} (relative) for {self.patience} epochs"
                )


class StageProgressBar(ProgressBar):
    """scvi-tools' per-epoch progress bar, named after the stage it follows ("denoise 3/80").

    Parameters
    ----------
    stage
        Name of the stage.
    refresh_rate
        Epochs between updates.
    """

    def __init__(self, stage: str, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.stage = stage

    def init_train_tqdm(self, trainer):
        # scvi-tools' bar, described by the stage instead of "Training"
        return track(
            None, total=trainer.max_epochs, description=f"{self.stage} stage", style="tqdm", disable=self.is_disabled
        )

    def on_train_epoch_start(self, trainer, pl_module):
        # Lightning's hook, not scvi-tools' (which would describe the bar as "Epoch n/N" first)
        ProgressBarBase.on_train_epoch_start(self, trainer, pl_module)
        if self._should_update(trainer.current_epoch, trainer.max_epochs):
            self.main_progress_bar.set_description(
                f"{self.stage} stage, epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
            )

"""Training stages declared as data: what each optimises, on which batches, for how long."""

from __future__ import annotations

from dataclasses import dataclass

from ..data._loaders import BatchKind


@dataclass(frozen=True)
class Stage:
    """One stage of a model's training.

    Parameters
    ----------
    name
        The stage's name: its loss in the module (``module.loss(..., stage=name)``) and the prefix of
        its logged metrics (``{name}_loss``, ``{name}_{term}``).
    parts
        The module's sub-networks the stage optimises; the others run in evaluation mode (no dropout,
        frozen running statistics) and are not updated.
    batches
        How its minibatches are built (:func:`~scdmac.data.CellDataModule`): ``"cells"``,
        ``"neighbor_pairs"`` or ``"subgraphs"``.
    steps
        Optimiser steps by default; the epochs follow from the number of cells and the batch size,
        within ``epochs``.
    epochs
        Smallest and largest default number of epochs.
    clustering
        A DEC stage (:class:`~scdmac.train.ClusterPlan`): fresh centres from the current embedding,
        its own learning rate, stopped by label changes rather than a loss plateau.
    """

    name: str
    parts: tuple[str, ...]
    batches: BatchKind = "cells"
    steps: int = 400
    epochs: tuple[int, int] = (5, 200)
    clustering: bool = False

    def default_epochs(self, n_obs: int, batch_size: int) -> int:
        """Epochs giving about :attr:`steps` optimiser steps over ``n_obs`` cells, within :attr:`epochs`."""
        steps_per_epoch = max(1, -(-n_obs // batch_size))
        lo, hi = self.epochs
        return int(min(max(round(self.steps / steps_per_epoch), lo), hi))

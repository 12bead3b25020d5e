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
        within ``epochs``. Where even the smallest number of epochs over all cells would take more
        steps (large data), each epoch is a random subset of the batches instead, so the default
        cost stays at about ``steps`` whatever the number of cells (see :meth:`default_schedule`).
    epochs
        Smallest and largest default number of epochs; ``None`` as the largest: as many as the step
        budget needs, so that data smaller than a minibatch (one step an epoch) get their
        ``steps`` too.
    clustering
        A DEC stage (:class:`~scdmac.train.ClusterPlan`): fresh centres from the current embedding,
        its own learning rate, stopped by label changes rather than a loss plateau.
    """

    name: str
    parts: tuple[str, ...]
    batches: BatchKind = "cells"
    steps: int = 400
    epochs: tuple[int, int | None] = (5, None)
    clustering: bool = False

    def default_epochs(self, n_obs: int, batch_size: int) -> int:
        """Epochs giving about :attr:`steps` optimiser steps over ``n_obs`` cells, within :attr:`epochs`."""
        return self.default_schedule(n_obs, batch_size)[0]

    def default_schedule(self, n_obs: int, batch_size: int) -> tuple[int, int | None]:
        """Default epochs and batches per epoch (``None``: all of them) for ``n_obs`` cells.

        Full epochs as long as the smallest number of them fits in about :attr:`steps` steps; above
        that size, the smallest number of epochs, each of ``steps / epochs`` batches drawn at random
        (the batch order is reshuffled every epoch). The targets of a clustering stage are then
        refreshed as often as on small data.
        """
        steps_per_epoch = max(1, -(-n_obs // batch_size))
        lo, hi = self.epochs
        if steps_per_epoch * lo > self.steps * 1.5:
            return lo, max(1, self.steps // lo)
        epochs = max(round(self.steps / steps_per_epoch), lo)
        return int(epochs if hi is None else min(epochs, hi)), None

"""Lightning training plans, one per training stage."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from scvi.module.base import LossOutput
from scvi.train import TrainingPlan

from .._constants import REGISTRY_KEYS
from ..data._graph import CellGraph
from ..module._heads import target_distribution


class StagePlan(TrainingPlan):
    """Optimise one stage's loss with Adam and log it as ``{stage}_loss`` (plus its parts).

    Parameters
    ----------
    module
        A module with ``stage_parameters(stage)`` and a ``{stage}_loss`` method.
    stage
        Stage name.
    lr, weight_decay
        Adam settings.
    pair_neighbors
        Batches hold each cell followed by one of its neighbours (see
        :class:`~scdmac.data.NeighborBatchSampler`); the loss gets them as ``x_neighbor``.
    graph
        The cell graph (:class:`~scdmac.data.CellGraph`); the loss gets the subgraph induced by each
        batch's cells as ``graph``.
    """

    def __init__(
        self,
        module,
        stage: str,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        pair_neighbors: bool = False,
        graph: CellGraph | None = None,
    ):
        super().__init__(module, lr=lr, weight_decay=weight_decay, optimizer="Adam")
        self.stage = stage
        self.pair_neighbors = pair_neighbors
        self.graph = graph

    def loss_inputs(self, batch: dict[str, torch.Tensor]) -> dict:
        """Keyword arguments of the stage's loss for one batch (``x`` and what the plan adds)."""
        x = batch[REGISTRY_KEYS.X_KEY]
        inputs = {"x": x}
        if self.pair_neighbors:
            n = x.shape[0] // 2
            inputs = {"x": x[:n], "x_neighbor": x[n:]}
        if self.graph is not None:
            inputs["graph"] = self.graph.subgraph(self.cells(batch).cpu().numpy(), device=x.device)
        return inputs

    def cells(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Row numbers of the batch's cells (without appended neighbours)."""
        index = batch[REGISTRY_KEYS.INDICES_KEY].long().view(-1)
        return index[: index.shape[0] // 2] if self.pair_neighbors else index

    def stage_loss(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        """The module's loss of this plan's stage on one minibatch."""
        return getattr(self.module, f"{self.stage}_loss")(**self.loss_inputs(batch))

    def training_step(self, batch, batch_idx):
        out = self.stage_loss(batch)
        n = self.cells(batch).shape[0]
        self.log(
            f"{self.stage}_loss",
            out.loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=n,
            sync_dist=self.use_sync_dist,
        )
        for name, value in (out.extra_metrics or {}).items():
            self.log(
                f"{self.stage}_{name}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=self.use_sync_dist
            )
        return out.loss

    def on_train_start(self) -> None:
        # output passes between stages leave the module in eval mode; frozen parts stay in eval
        self.module.stage_mode(self.stage)

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        params: Iterable = [p for p in self.module.stage_parameters(self.stage) if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, eps=self.eps)


class ClusterPlan(StagePlan):
    """Clustering stage: DEC targets over all cells refreshed every ``update_interval`` epochs.

    Training stops when fewer than ``tol`` of the cells change label between two refreshes
    (DEC's own criterion), or at ``max_epochs``.

    Parameters
    ----------
    module
        The model's module.
    assign_all
        Returns the soft assignment ``Q`` of every cell (in registry order) with the current network.
    update_interval
        Epochs between target refreshes.
    tol
        Fraction of changed labels below which training stops.
    min_epochs
        Refreshes are not allowed to stop training before this many epochs.
    **kwargs
        Passed to :class:`StagePlan`.
    """

    OWN_ARGS = ("update_interval", "min_epochs")

    def __init__(
        self,
        module,
        assign_all: Callable[[], torch.Tensor],
        update_interval: int = 1,
        tol: float = 1e-3,
        min_epochs: int = 1,
        **kwargs,
    ):
        super().__init__(module, stage="cluster", **kwargs)
        self.assign_all = assign_all
        self.update_interval = update_interval
        self.tol = tol
        self.min_epochs = min_epochs
        self.target: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None

    def _refresh(self) -> float:
        self.module.eval()
        with torch.no_grad():
            q = self.assign_all().to(self.device)
        self.module.stage_mode(self.stage)
        self.target = target_distribution(q)
        labels = q.argmax(1)
        changed = 1.0 if self.labels is None else (labels != self.labels).float().mean().item()
        self.labels = labels
        return changed

    def on_train_start(self) -> None:
        super().on_train_start()
        self._refresh()

    def on_train_epoch_end(self) -> None:
        if (self.current_epoch + 1) % self.update_interval:
            return
        changed = self._refresh()
        self.log("cluster_label_change", changed, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)
        if changed < self.tol and self.current_epoch + 1 >= self.min_epochs:
            self.trainer.should_stop = True

    def stage_loss(self, batch):
        return self.module.cluster_loss(target=self.target[self.cells(batch)], **self.loss_inputs(batch))

"""Lightning training plans, one per kind of stage: they only compute and log the module's loss."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from scvi.module.base import BaseModuleClass, LossOutput
from scvi.train import TrainingPlan

from .._constants import BATCH_KEYS
from ..data._validate import check_int
from ..module._heads import target_distribution
from ._stages import Stage

logger = logging.getLogger(__name__)


class StagePlan(TrainingPlan):
    """Optimise one stage's loss with Adam and log it as ``{stage}_loss`` (plus each term and part).

    Each step runs the module's scvi-tools forward pass (``inference``, ``generative``, ``loss``) on
    the batch the data module built for the stage.

    Parameters
    ----------
    module
        A module whose ``inference`` and ``loss`` take ``stage`` (see :class:`~scdmac.module.SCDMACModule`).
    stage
        The stage: its name, the sub-networks it optimises (the others run in evaluation mode).
    lr, weight_decay
        Adam settings.
    eps
        Adam's ``eps`` (scvi-tools' 0.01, not torch's 1e-8). Where gradients are far below it, a
        step is about ``lr·gradient/eps``: a lower effective learning rate. Smaller values measured
        worse on simulated data (method notes, "Adam's eps").
    """

    def __init__(
        self,
        module: BaseModuleClass,
        stage: Stage,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eps: float = 0.01,
    ):
        super().__init__(module, lr=lr, weight_decay=weight_decay, eps=eps, optimizer="Adam")
        self.stage = stage
        #: why the stage stopped before its last epoch (set by the stopping rule that stopped it)
        self.stop_reason: str | None = None

    def loss_kwargs_for(self, batch: dict[str, torch.Tensor]) -> dict:
        """Keyword arguments of ``module.loss`` beside the outputs (the stage; DEC targets in clustering)."""
        return {"stage": self.stage.name}

    def stage_loss(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        """The module's loss of this plan's stage on one minibatch."""
        _, _, out = self.forward(
            batch, inference_kwargs={"stage": self.stage.name}, loss_kwargs=self.loss_kwargs_for(batch)
        )
        return out

    def training_step(self, batch, batch_idx):
        out = self.stage_loss(batch)
        name, n = self.stage.name, out.n_obs_minibatch
        self.log(
            f"{name}_loss",
            out.loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=n,
            sync_dist=self.use_sync_dist,
        )
        for metric, value in (out.extra_metrics or {}).items():
            self.log(
                f"{name}_{metric}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=self.use_sync_dist
            )
        return out.loss

    def validation_step(self, batch, batch_idx):
        """The stage's loss on a minibatch of held-out cells, logged as ``{stage}_validation_loss``."""
        out = self.stage_loss(batch)
        self.log(
            f"{self.stage.name}_validation_loss",
            out.loss,
            on_step=False,
            on_epoch=True,
            batch_size=out.n_obs_minibatch,
            sync_dist=self.use_sync_dist,
        )

    def set_stage_mode(self) -> None:
        """Training mode for the stage's parts, evaluation mode and no gradients for the other sub-networks.

        Frozen parts then cost no backward pass, and distributed data parallel (which expects a
        gradient for every parameter that asks for one) sees only the stage's parameters.
        """
        self.module.train()
        for part, child in self.module.named_children():
            trained = part in self.stage.parts
            child.requires_grad_(trained)
            if not trained:
                child.eval()

    def release_parts(self) -> None:
        """Give every parameter its gradient back (after the stage)."""
        self.module.requires_grad_(True)

    def on_train_start(self) -> None:
        # output passes between stages leave the module in eval mode; frozen parts stay in eval
        self.set_stage_mode()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # counted here because a fused Adam step leaves the weights' version counters as they were
        self.module.weight_updates += 1

    def configure_optimizers(self):
        parts = [getattr(self.module, part) for part in self.stage.parts]
        params = [p for part in parts for p in part.parameters()]
        # the fused update is one kernel over all tensors: on CPU a quarter of the per-tensor loop's time
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        # Lightning cannot clip the gradients of a fused optimiser under mixed precision
        fused = fused and not (self._trainer is not None and self._trainer.gradient_clip_val)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, eps=self.eps, fused=fused or None)


class ClusterPlan(StagePlan):
    """Clustering stage: DEC targets over all cells refreshed every ``update_interval`` epochs.

    At each refresh every cell is embedded and assigned; a cluster left with fewer than
    ``min_cluster_size`` cells gets its centre back by splitting the cluster that fits its cells
    worst (:meth:`~scdmac.module.ClusterHead.refill`), so the stage keeps the clusters asked for
    while the data can support them. The number of kept clusters is logged as
    ``cluster_nonempty`` per refresh.

    Training stops when fewer than ``tol`` of the cells change label between two refreshes
    (DEC's own criterion), or at ``max_epochs``. With ``collapse_fraction > 0`` it also stops when a
    cluster collapses: once a cluster holds fewer than that share of the cells it held at the start,
    DEC is merging clusters rather than sharpening them, and the network and centres go back to their
    state at the previous refresh.

    Parameters
    ----------
    module
        The model's module.
    stage
        The clustering stage.
    embed_all
        Returns the embedding of every cell (in registry order) with the current network.
    update_interval
        Epochs between target refreshes.
    tol
        Fraction of changed labels below which training stops.
    min_epochs
        Refreshes are not allowed to stop training before this many epochs.
    collapse_fraction
        Smallest share of its starting cells a cluster may keep (``0``, the default, turns the check off).
    refill
        Re-seed clusters that lost their cells at each refresh.
    min_cluster_size
        Fewest cells a cluster must hold to count as kept.
    seed
        Seed of the splits that re-seed clusters.
    target_balance
        Exponent of each cluster's soft size in DEC's target (:func:`~scdmac.module.target_distribution`):
        1 is DEC, whose target moves cells towards smaller clusters; 0 drops that pull.
    **kwargs
        Passed to :class:`StagePlan` (``lr``, ``weight_decay``, ``eps``).
    """

    def __init__(
        self,
        module: BaseModuleClass,
        stage: Stage,
        embed_all: Callable[[], torch.Tensor],
        update_interval: int = 1,
        tol: float = 1e-3,
        min_epochs: int = 1,
        collapse_fraction: float = 0.0,
        refill: bool = True,
        min_cluster_size: int = 2,
        seed: int = 0,
        target_balance: float = 1.0,
        **kwargs,
    ):
        super().__init__(module, stage, **kwargs)
        self.check_settings(
            {
                "update_interval": update_interval,
                "collapse_fraction": collapse_fraction,
                "target_balance": target_balance,
                "min_cluster_size": min_cluster_size,
            }
        )
        self.embed_all = embed_all
        self.update_interval = update_interval
        self.tol = tol
        self.min_epochs = min_epochs
        self.collapse_fraction = collapse_fraction
        self.refill = refill
        self.min_cluster_size = min_cluster_size
        self.seed = seed
        self.target_balance = target_balance
        # set at the start of the stage, then at every refresh (empty before)
        self.target = torch.empty(0)
        self.labels = torch.empty(0, dtype=torch.long)
        self.start_sizes = torch.empty(0, dtype=torch.long)
        self._saved_state: dict[str, torch.Tensor] | None = None
        #: the refresh (epochs done) whose state the stage ended with after a collapse, else ``None``
        self.collapsed_at: int | None = None
        #: how many times a centre was re-seeded
        self.n_refilled = 0

    @staticmethod
    def check_settings(settings: dict, name: str = "{}") -> None:
        """Raise on a setting of the clustering stage out of its range.

        The plan checks its own settings; ``train()`` runs the same checks on ``plan_kwargs`` before the
        first stage, so a bad value is refused before pretraining rather than after it.

        Parameters
        ----------
        settings
            Some of ``update_interval``, ``collapse_fraction``, ``target_balance`` and
            ``min_cluster_size``, by name; other keys are not checked here.
        name
            How an error message names a setting: a format string of its key, e.g. ``"plan_kwargs[{!r}]"``.
        """
        if "update_interval" in settings:
            check_int(name.format("update_interval"), settings["update_interval"], 1)
        value = settings.get("collapse_fraction", 0.0)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name.format('collapse_fraction')} must be in [0, 1), got {value}.")
        value = settings.get("target_balance", 1.0)
        if not value >= 0.0:
            raise ValueError(f"{name.format('target_balance')} must be at least 0 (1 is DEC's target), got {value}.")
        value = settings.get("min_cluster_size", 1)
        if value < 1:
            raise ValueError(f"{name.format('min_cluster_size')} must be at least 1, got {value}.")

    def _embed(self) -> torch.Tensor:
        self.module.eval()
        with torch.no_grad():
            z = self.embed_all().to(self.device)
        self.set_stage_mode()
        return z

    def _refill(self, z: torch.Tensor) -> torch.Tensor:
        """Re-seed lost clusters (when on); the soft assignment of ``z`` to the resulting centres."""
        head = self.module.cluster_head
        with torch.no_grad():
            moved = head.refill(z, self.min_cluster_size, self.seed) if self.refill else []
            if moved:
                self.n_refilled += len(moved)
                self._forget_moments(moved)
                logger.debug("Re-seeded cluster(s) %s at epoch %d.", moved, self.current_epoch)
            return head.soft_assignment(z)

    def _forget_moments(self, rows: list[int]) -> None:
        # Adam's running moments of a moved centre still point where it was being dragged
        centers = self.module.cluster_head.centers
        for optimizer in getattr(self.trainer, "optimizers", None) or []:
            for moment in optimizer.state.get(centers, {}).values():
                if torch.is_tensor(moment) and moment.shape == centers.shape:
                    moment[rows] = 0.0

    def _accept(self, q: torch.Tensor) -> float:
        """Make ``q`` the current assignment: new targets and labels; the fraction of labels changed."""
        self.target = target_distribution(q, self.target_balance)
        labels = q.argmax(1)
        changed = 1.0 if self.labels.numel() == 0 else (labels != self.labels).float().mean().item()
        self.labels = labels
        if self.collapse_fraction > 0:
            self._saved_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        return changed

    def n_kept(self) -> int:
        """Clusters holding at least ``min_cluster_size`` cells in the current assignment."""
        sizes = torch.bincount(self.labels, minlength=self.module.cluster_head.n_clusters)
        return int((sizes >= self.min_cluster_size).sum())

    def _collapsed(self, labels: torch.Tensor) -> bool:
        sizes = torch.bincount(labels, minlength=self.start_sizes.shape[0])
        return bool((sizes < self.collapse_fraction * self.start_sizes).any())

    def on_train_start(self) -> None:
        super().on_train_start()
        q = self._refill(self._embed())
        self.start_sizes = torch.bincount(q.argmax(1), minlength=q.shape[1])
        self._accept(q)

    def on_train_epoch_end(self) -> None:
        if (self.current_epoch + 1) % self.update_interval:
            return
        z = self._embed()
        if self.collapse_fraction > 0:
            with torch.no_grad():
                labels = self.module.cluster_head.soft_assignment(z).argmax(1)
            if self._collapsed(labels):
                self.module.load_state_dict(self._saved_state)
                self.collapsed_at = self.current_epoch + 1 - self.update_interval
                logger.info(
                    "A cluster lost more than %.0f%% of its cells in epoch %d: clustering stopped with the "
                    "state of epoch %d.",
                    100 * (1 - self.collapse_fraction),
                    self.current_epoch + 1,
                    self.collapsed_at,
                )
                self.trainer.should_stop = True
                self.stop_reason = f"a cluster collapsed; the state of epoch {self.collapsed_at} was kept"
                return
        changed = self._accept(self._refill(z))
        self.log("cluster_label_change", changed, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)
        self.log("cluster_nonempty", float(self.n_kept()), on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)
        if changed < self.tol and self.current_epoch + 1 >= self.min_epochs:
            self.trainer.should_stop = True
            self.stop_reason = f"{changed:.2%} of the cells changed cluster, below tol={self.tol:g}"

    def loss_kwargs_for(self, batch: dict[str, torch.Tensor]) -> dict:
        """The stage and the batch's rows of the current DEC targets."""
        return {"stage": self.stage.name, "target": self.target[batch[BATCH_KEYS.INDEX]]}

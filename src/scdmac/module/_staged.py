"""Loss terms declared per training stage, weighed into scvi-tools' ``LossOutput``."""

from __future__ import annotations

import torch
from scvi.module.base import LossOutput

from ._heads import ClusterHead


class StagedLossMixin:
    """For modules trained in stages: each stage's loss is a weighted sum of named terms.

    The module sets ``stage_weights`` (stage → term → weight, in summation order); a term of weight 0
    is neither computed nor logged.
    """

    stage_weights: dict[str, dict[str, float]]
    cluster_head: ClusterHead
    #: optimiser steps taken so far, counted by the training plans (a fused Adam step does not advance
    #: the weights' in-place version counters, so caches of passes over the weights key on this)
    weight_updates: int = 0

    def active_terms(self, stage: str | None) -> set[str]:
        """Terms of ``stage`` with a positive weight (none for ``None``, the outputs pass)."""
        if stage is None:
            return set()
        if stage not in self.stage_weights:
            raise ValueError(f"Unknown stage {stage!r}: this module has {list(self.stage_weights)}.")
        return {term for term, weight in self.stage_weights[stage].items() if weight > 0}

    def kl_term(self, q: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-cell KL(P‖Q) of the soft assignment ``q`` from the batch's DEC targets, which it needs."""
        if target is None:
            raise ValueError("The clustering stage's loss needs the batch's DEC targets: pass target=...")
        return self.cluster_head.kl_loss(q, target)

    def check_stage(self, stage: str) -> None:
        """Refuse a stage whose terms are all switched off, before it trains."""
        if not self.active_terms(stage):
            raise ValueError(
                f"Every loss term of the {stage!r} stage is switched off (all weights are 0): "
                f"give one of {list(self.stage_weights[stage])} a positive weight."
            )

    def weighted_loss(
        self,
        stage: str,
        per_cell: dict[str, torch.Tensor],
        extra: dict[str, torch.Tensor],
        n_obs: int,
        batch_values: dict[str, torch.Tensor] | None = None,
    ) -> LossOutput:
        """``Σ w_t · term_t`` over the stage's active terms, as a :class:`~scvi.module.base.LossOutput`.

        Parameters
        ----------
        stage
            The stage.
        per_cell
            Per-cell values of the terms that have them; ``kl`` goes to ``kl_local``, the others to
            ``reconstruction_loss``.
        extra
            Further batch metrics to log (the terms' batch values are logged too when there are several).
        n_obs
            Cells in the batch.
        batch_values
            Batch values of terms that are not the mean of a per-cell value (e.g. a loss over cell
            pairs); the others are averaged over cells.
        """
        self.check_stage(stage)
        batch_values = dict(batch_values or {})
        total: torch.Tensor | int = 0
        for term, weight in self.stage_weights[stage].items():
            if weight > 0:
                if term not in batch_values:
                    batch_values[term] = per_cell[term].mean()
                total = total + weight * batch_values[term]
        assert torch.is_tensor(total)
        # a stage of one term logs it as its loss only
        terms = batch_values if len(batch_values) > 1 else {}
        kl = {k: v for k, v in per_cell.items() if k == "kl"}
        reconstruction = {k: v for k, v in per_cell.items() if k != "kl"}
        return LossOutput(
            loss=total,
            reconstruction_loss=reconstruction or None,
            kl_local=kl or None,
            extra_metrics={**terms, **extra},
            n_obs_minibatch=n_obs,
        )

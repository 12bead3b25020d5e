"""Run a benchmark script with the pretraining stages' learning rate annealed along a cosine (an ad hoc screen).

Every pretraining stage (not the clustering stage) runs Adam at a fixed learning rate until its step budget
ends, so its last weights are wherever the last noisy steps left them. Patched here: the rate falls from its
value towards ``COSINE_FLOOR`` times that value along half a cosine over the stage's planned optimiser steps
(Loshchilov and Hutter's annealing without restarts). Environment variables choose the variant:

* ``COSINE_STAGES``: the stages annealed, comma-separated (default: every pretraining stage);
* ``COSINE_FLOOR``: the last rate as a share of the first (default 0).

Labels are never read. Usage::

    python with_cosine_lr.py benchmarks/accuracy.py --methods scdmac ...
    COSINE_STAGES=mask COSINE_FLOOR=0.1 python with_cosine_lr.py benchmarks/tissue.py ...
"""

import math
import os
import sys
from pathlib import Path

import torch

from scdmac.train import _plans

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from patched_run import run_benchmark  # noqa: E402

STAGES = [s for s in os.environ.get("COSINE_STAGES", "").split(",") if s]
FLOOR = float(os.environ.get("COSINE_FLOOR", "0"))


def _configure_with_cosine(self):
    optimizer = _original(self)
    if self.stage.clustering or (STAGES and self.stage.name not in STAGES):
        return optimizer
    total = max(1, int(self.trainer.estimated_stepping_batches))

    def factor(step: int) -> float:
        return FLOOR + (1.0 - FLOOR) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


_original = _plans.StagePlan.configure_optimizers
_plans.StagePlan.configure_optimizers = _configure_with_cosine

if __name__ == "__main__":
    run_benchmark(sys.argv[1:])

"""Lightning training plans, one per stage, and unsupervised stopping rules."""

from ._callbacks import RelativePlateau
from ._plans import ClusterPlan, StagePlan

__all__ = ["ClusterPlan", "RelativePlateau", "StagePlan"]

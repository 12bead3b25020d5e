"""Training stages, the Lightning plans that run them, and unsupervised stopping rules."""

from ._callbacks import RelativePlateau, StageProgressBar
from ._plans import ClusterPlan, StagePlan
from ._stages import Stage

__all__ = ["ClusterPlan", "RelativePlateau", "Stage", "StagePlan", "StageProgressBar"]

"""Plots of training, assignment confidence and agreement with reference labels, in ``sc.pl`` style."""

from ._plots import assignment_confidence, label_agreement, training_curves

__all__ = ["assignment_confidence", "label_agreement", "training_curves"]

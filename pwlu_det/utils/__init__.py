"""Utilities around trained PWLU models: plots of the learned activation curves, and atomic file
writes (:mod:`pwlu_det.utils.file_io`)."""

from .activation_plots import (
    ActivationPlot,
    UnitCurves,
    compute_unit_curves,
    plot_pwlu_activations,
)

__all__ = [
    "ActivationPlot",
    "UnitCurves",
    "compute_unit_curves",
    "plot_pwlu_activations",
]

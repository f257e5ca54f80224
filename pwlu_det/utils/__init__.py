"""Utilities around trained PWLU models: plots of the learned activation curves."""

from .activation_plots import (
    ActivationPlot,
    UnitCurves,
    collect_pwlu_units,
    compute_unit_curves,
    plot_pwlu_activations,
)

__all__ = [
    "ActivationPlot",
    "UnitCurves",
    "collect_pwlu_units",
    "compute_unit_curves",
    "plot_pwlu_activations",
]

"""Plots of learned PWLU curves, one panel per PWLU layer (like the paper's figures).

Each panel shows, for one PWLU module of a checkpoint, state dict or model:

- the learned curve (layer-wise), or the median curve across channels with a shaded band of
  per-channel curves (channel-wise; pointwise percentiles, 10-90% by default);
- the bounds B_L and B_R as vertical lines (channel-wise: the medians across channels);
- the input range collected in Phase I, ``running_mean -/+ 3 * running_std`` (channel-wise:
  the medians of the per-channel ends), as a shaded span; omitted when no batch was tracked;
- ReLU as a thin reference line.

Curves are evaluated with :func:`pwlu_det.layers.pwlu_reference` in float64, on an x-range
that covers the bounds and the collected range plus a margin. Rendering uses matplotlib's Agg
canvas directly (no pyplot, no display, no global backend switch).

Example::

    from pwlu_det.utils import plot_pwlu_activations

    result = plot_pwlu_activations("output/run/model_final.pth", "pwlu_curves.png")
    print(result.path, result.layers_plotted)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from pwlu_det.checkpoint.state_dict import find_pwlu_units, load_state_dict
from pwlu_det.layers import PARAM_NAMES, STATE_NAMES, Phase, breakpoints, pwlu_reference

from .file_io import atomic_write

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes

__all__ = [
    "HEADER_INCHES",
    "ActivationPlot",
    "UnitCurves",
    "compute_unit_curves",
    "plot_pwlu_activations",
    "short_module_path",
]

logger = logging.getLogger(__name__)


_CURVE_COLOR = "tab:blue"
_RELU_COLOR = "0.35"
_BOUND_COLOR = "tab:red"
_RANGE_COLOR = "tab:orange"
_POINT_COLOR = "navy"
#: Height (inches) added to the figure for the title and the legend.
HEADER_INCHES = 0.7


@dataclass(frozen=True)
class UnitCurves:
    """The curve data of one PWLU module, as plotted in its panel.

    Attributes:
        name: full module path (the state-dict prefix).
        num_channels: None for a layer-wise unit, else the number of channels C.
        num_intervals: N.
        phase: the unit's phase, from its state-dict entry ``phase``.
        x: the evaluation grid, shape ``(T,)``, float64.
        curves: f(x) per unit, shape ``(C, T)`` (``(1, T)`` for layer-wise), float64.
        median: median of ``curves`` across channels, shape ``(T,)``.
        band_low, band_high: pointwise percentiles of ``curves`` (the shaded band), ``(T,)``;
            equal to ``median`` for a layer-wise unit.
        left_bound, right_bound: the bounds (channel-wise: medians across channels).
        range_low, range_high: the collected input range ``mean -/+ range_std * std``
            (channel-wise: medians of the per-channel ends); None when no batch was tracked.
        relu_gap: how far the unit is from ReLU: max |f(x) - ReLU(x)| over the plotted x
            range, per channel, then the median across channels. Right after a "paper"
            realignment this is already up to d/4 (d = interval width): ReLU interpolated on a
            grid where 0 is not a breakpoint.
        height_gap: how far the heights are from ReLU at the unit's own breakpoints,
            max_i |Y_i - ReLU(B_i)| per channel, then the median across channels: what
            training changed, without the interpolation error of the grid.
        breakpoints: the breakpoints of the median bounds, ``(N + 1,)``.
    """

    name: str
    num_channels: int | None
    num_intervals: int
    phase: Phase
    x: np.ndarray
    curves: np.ndarray
    median: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    left_bound: float
    right_bound: float
    range_low: float | None
    range_high: float | None
    relu_gap: float
    height_gap: float
    breakpoints: np.ndarray

    @property
    def granularity(self) -> str:
        """``"layer-wise"`` or ``"<C> channels"``."""
        return "layer-wise" if self.num_channels is None else f"{self.num_channels} channels"


@dataclass(frozen=True)
class ActivationPlot:
    """What :func:`plot_pwlu_activations` wrote. Usable wherever a path is (``os.PathLike``).

    Attributes:
        path: the PNG file.
        layers_plotted: number of panels drawn in the figure (counted on the figure).
        layers_total: number of PWLU modules found.
        titles: panel titles, in order.
        size_px: (width, height) of the PNG in pixels.
    """

    path: Path
    layers_plotted: int
    layers_total: int
    titles: tuple[str, ...]
    size_px: tuple[int, int]

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def short_module_path(name: str, max_parts: int = 3) -> str:
    """The last ``max_parts`` components of a module path (``"..."`` marks a cut)."""
    parts = name.split(".")
    if len(parts) <= max_parts:
        return name or "<root>"
    return "..." + ".".join(parts[-max_parts:])


# -------------------------------------------------------------------------------------------
# Curves.


def compute_unit_curves(
    unit: Mapping[str, torch.Tensor],
    name: str = "",
    *,
    num_points: int = 401,
    margin: float = 0.15,
    band: tuple[float, float] = (10.0, 90.0),
    range_std: float = 3.0,
) -> UnitCurves:
    """Evaluate one PWLU unit (all its channels) on a common x grid, in float64.

    The x range is ``[lo - margin * w, hi + margin * w]`` where ``[lo, hi]`` covers the bounds
    (channel-wise: the ``band`` percentiles of the left and right bounds, so that a few extreme
    channels do not squash the plot) and the collected range, and ``w = hi - lo``.

    Args:
        unit: the nine entries of one PWLU module (see
            :func:`pwlu_det.checkpoint.find_pwlu_units`).
        name: module path, kept in the result.
        num_points: number of grid points; the breakpoints of the median bounds are added.
        margin: margin on each side, as a fraction of the covered width.
        band: lower and upper percentiles of the shaded band (``(0, 100)``: min-max).
        range_std: the collected range is ``running_mean -/+ range_std * running_std``.

    Returns:
        The grid, the per-channel curves, their median and band, the bounds and the range.

    Channels with non-finite parameters (a diverged training) keep their curves in
    ``curves`` but are left out of the median, the band, the gaps and the x range.

    Raises:
        ValueError: parameter shapes that do not form a PWLU unit, or no finite channel.
    """
    params = [torch.as_tensor(unit[k]).detach().cpu().double() for k in PARAM_NAMES]
    left, right, heights, left_slope, right_slope = params
    if heights.dim() not in (1, 2) or heights.shape[-1] < 2:
        raise ValueError(f"PWLU unit {name!r}: heights must be (N+1,) or (C, N+1), N >= 1")
    channelwise = heights.dim() == 2
    num_units = heights.shape[0] if channelwise else 1
    expected = (num_units,) if channelwise else ()
    for key, p in zip(PARAM_NAMES, params, strict=True):
        if key != "heights" and tuple(p.shape) != expected:
            raise ValueError(
                f"PWLU unit {name!r}: {key} has shape {tuple(p.shape)}, expected {expected}"
            )
    num_intervals = heights.shape[-1] - 1
    low_q, high_q = band[0] / 100.0, band[1] / 100.0
    finite = torch.ones(num_units, dtype=torch.bool)
    for p in params:
        finite &= torch.isfinite(p.reshape(num_units, -1)).all(dim=1)
    if not finite.any():
        raise ValueError(f"PWLU unit {name!r}: no channel has finite parameters")
    if not finite.all():
        logger.warning(
            "PWLU unit %s: %d of %d channels have non-finite parameters; they are left out of "
            "the median, the band and the x range",
            name,
            int((~finite).sum()),
            num_units,
        )

    def median(t: torch.Tensor) -> float:
        return float(torch.quantile(t.reshape(-1), 0.5))

    mean = torch.as_tensor(unit["running_mean"]).double().reshape(-1)
    std = torch.as_tensor(unit["running_std"]).double().reshape(-1)
    ends = torch.stack([mean - range_std * std, mean + range_std * std])
    ends = ends[:, torch.isfinite(ends).all(dim=0)]
    tracked = int(torch.as_tensor(unit["num_batches_tracked"])) > 0
    range_low = range_high = None
    if tracked and ends.shape[1] > 0:
        range_low, range_high = median(ends[0]), median(ends[1])

    left, right = left.reshape(-1)[finite], right.reshape(-1)[finite]
    cover_low = float(torch.quantile(left, low_q))
    cover_high = float(torch.quantile(right, high_q))
    if range_low is not None:
        cover_low, cover_high = min(cover_low, range_low), max(cover_high, range_high)
    width = max(cover_high - cover_low, 1e-6)
    left_median, right_median = median(left), median(right)
    grid = np.linspace(cover_low - margin * width, cover_high + margin * width, num_points)
    breaks = breakpoints(
        torch.tensor(left_median, dtype=torch.float64),
        torch.tensor(right_median, dtype=torch.float64),
        num_intervals,
    ).numpy()
    x = np.unique(np.concatenate([grid, breaks, [0.0]]))
    x = x[(x >= grid[0]) & (x <= grid[-1])]

    xt = torch.from_numpy(x)
    if channelwise:  # (T, C): channel c of column c uses the parameters of channel c
        out = pwlu_reference(xt.unsqueeze(1).expand(-1, num_units), *params, channel_dim=1)
        curves = out.t().contiguous().numpy()
    else:
        curves = pwlu_reference(xt, *params).unsqueeze(0).numpy()
    relu = np.maximum(x, 0.0)
    unit_breaks = breakpoints(left, right, num_intervals)
    unit_heights = heights.reshape(num_units, -1)[finite]
    height_gap = (unit_heights - unit_breaks.clamp(min=0)).abs().amax(dim=-1)
    used = curves[finite.numpy()]
    return UnitCurves(
        name=name,
        num_channels=num_units if channelwise else None,
        num_intervals=num_intervals,
        phase=Phase(int(torch.as_tensor(unit["phase"]))),
        x=x,
        curves=curves,
        median=np.median(used, axis=0),
        band_low=np.percentile(used, band[0], axis=0),
        band_high=np.percentile(used, band[1], axis=0),
        left_bound=left_median,
        right_bound=right_median,
        range_low=range_low,
        range_high=range_high,
        relu_gap=float(np.median(np.abs(used - relu).max(axis=1))),
        height_gap=median(height_gap),
        breakpoints=breaks,
    )


# -------------------------------------------------------------------------------------------
# Plotting.


def _panel_title(curves: UnitCurves) -> str:
    phase = curves.phase.name.lower()
    return (
        f"{short_module_path(curves.name)}\n"
        f"{curves.granularity}, N={curves.num_intervals}, phase={phase}"
    )


def _draw_panel(ax: Axes, curves: UnitCurves, residual: bool) -> None:
    x = curves.x
    relu = np.maximum(x, 0.0)
    offset = relu if residual else 0.0  # residual: f - ReLU, so ReLU becomes y = 0
    if curves.range_low is not None:
        ax.axvspan(curves.range_low, curves.range_high, color=_RANGE_COLOR, alpha=0.12, lw=0)
    if curves.num_channels is not None:
        ax.fill_between(
            x,
            curves.band_low - offset,
            curves.band_high - offset,
            color=_CURVE_COLOR,
            alpha=0.3,
            lw=0,
        )
    ax.plot(x, relu - offset, color=_RELU_COLOR, lw=0.8, ls=":")
    ax.plot(x, curves.median - offset, color=_CURVE_COLOR, lw=1.6)
    on_grid = np.isin(x, curves.breakpoints)
    ax.plot(x[on_grid], (curves.median - offset)[on_grid], "o", color=_POINT_COLOR, ms=2.6, mew=0)
    for bound in (curves.left_bound, curves.right_bound):
        ax.axvline(bound, color=_BOUND_COLOR, lw=0.9, ls="--")
    ax.set_xlim(x[0], x[-1])
    ax.set_title(_panel_title(curves), fontsize=7.5)
    ax.tick_params(labelsize=6.5, length=2, pad=1.5)
    ax.grid(True, lw=0.3, alpha=0.5)
    note = f"max|f-ReLU| = {curves.relu_gap:.2g}\nmax|$Y_i$-ReLU($B_i$)| = {curves.height_gap:.2g}"
    if curves.phase == Phase.STATISTICS:
        note += "\n(phase I: outputs ReLU)"
    ax.text(
        0.03,
        0.96,
        note,
        transform=ax.transAxes,
        fontsize=6.5,
        va="top",
        ha="left",
        bbox={"fc": "white", "alpha": 0.75, "lw": 0, "pad": 1.0},
    )


def _legend_handles(band: tuple[float, float], residual: bool) -> list[Artist]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    band_label = "min-max" if band == (0.0, 100.0) else f"{band[0]:g}-{band[1]:g}%"
    return [
        Line2D(
            [],
            [],
            color=_CURVE_COLOR,
            lw=1.6,
            marker="o",
            ms=2.6,
            mfc=_POINT_COLOR,
            mew=0,
            label="PWLU (channel-wise: median), dots: breakpoints",
        ),
        Patch(color=_CURVE_COLOR, alpha=0.3, label=f"channels, {band_label}"),
        Line2D(
            [], [], color=_RELU_COLOR, lw=0.8, ls=":", label="ReLU (y = 0)" if residual else "ReLU"
        ),
        Line2D([], [], color=_BOUND_COLOR, lw=0.9, ls="--", label="bounds $B_L$, $B_R$"),
        Patch(color=_RANGE_COLOR, alpha=0.12, label="collected mean $\\pm$ 3 std"),
    ]


def plot_pwlu_activations(
    checkpoint_or_state_dict_or_model: str | os.PathLike | Mapping[str, object] | nn.Module,
    output_png: str | os.PathLike,
    *,
    max_layers: int | None = None,
    columns: int = 4,
    dpi: float = 110,
    panel_size: tuple[float, float] = (3.0, 2.6),
    band: tuple[float, float] = (10.0, 90.0),
    title: str | None = None,
    residual: bool = False,
) -> ActivationPlot:
    """Plot the learned PWLU curves of a model as a PNG grid, one panel per PWLU module.

    Args:
        checkpoint_or_state_dict_or_model: a ``.pth`` path (Detectron2 checkpoint with a
            ``"model"`` entry, or a bare state dict), such a dict, or an ``nn.Module``.
        output_png: where to write the PNG (written to a temp file, then ``os.replace``).
        max_layers: plot only the first ``max_layers`` modules (state-dict order).
        columns: panels per row (fewer if there are fewer panels).
        dpi: resolution; the PNG is ``figsize * dpi`` pixels, with
            ``figsize = (columns * panel_size[0], rows * panel_size[1] + HEADER_INCHES)``.
        panel_size: width and height of one panel, inches.
        band: percentiles of the shaded per-channel band; ``(0, 100)`` for min-max.
        title: figure title; default: the source and the number of layers shown.
        residual: plot ``f(x) - ReLU(x)`` instead of ``f(x)`` (shows small departures from
            ReLU, as after a short training).

    Returns:
        An :class:`ActivationPlot` (path, number of panels drawn, titles, pixel size); it is
        ``os.PathLike``.

    Raises:
        FileNotFoundError: a checkpoint path that does not exist.
        ValueError: no PWLU unit in the state dict (e.g. a Swish checkpoint), or bad
            arguments.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if columns < 1:
        raise ValueError(f"PWLU plot: columns must be >= 1, got {columns}")
    if max_layers is not None and max_layers < 1:
        raise ValueError(f"PWLU plot: max_layers must be None or >= 1, got {max_layers}")
    if not 0.0 <= band[0] <= band[1] <= 100.0:
        raise ValueError(f"PWLU plot: band must be percentiles lo <= hi in [0, 100], got {band}")
    source = checkpoint_or_state_dict_or_model
    units = find_pwlu_units(load_state_dict(source))
    if not units:
        where = source if isinstance(source, (str, os.PathLike)) else "the state dict"
        raise ValueError(
            f"{os.fspath(where)} has no PWLU units (no module with all of "
            f"{', '.join(STATE_NAMES)}): a checkpoint of another activation? Nothing to plot"
        )
    names = list(units)[:max_layers]
    if len(names) < len(units):
        logger.info("PWLU plot: showing %d of %d PWLU layers", len(names), len(units))
    all_curves = [compute_unit_curves(units[n], n, band=band) for n in names]

    columns = min(columns, len(all_curves))
    rows = math.ceil(len(all_curves) / columns)
    figsize = (columns * panel_size[0], rows * panel_size[1] + HEADER_INCHES)
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).reshape(-1)
    for ax, curves in zip(axes, all_curves, strict=False):
        _draw_panel(ax, curves, residual)
    for ax in axes[len(all_curves) :]:
        ax.set_visible(False)
    if title is None:
        label = source.__class__.__name__ if isinstance(source, (nn.Module, Mapping)) else source
        what = "PWLU minus ReLU" if residual else "Learned PWLU activations"
        title = f"{what}: {Path(str(label)).name}"
    shown = f"{len(names)} of {len(units)}" if len(names) < len(units) else f"{len(units)}"
    fig.suptitle(f"{title} ({shown} PWLU layers)", fontsize=10)
    fig.legend(
        handles=_legend_handles(band, residual),
        loc="outside lower center",
        ncols={1: 1, 2: 3}.get(columns, 5),
        fontsize=7,
        frameon=False,
    )
    fig.get_layout_engine().set(w_pad=0.04, h_pad=0.04, hspace=0.03, wspace=0.02)

    drawn = [ax for ax in axes if ax.get_visible() and ax.lines]
    output = Path(output_png)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda f: fig.savefig(f, format="png", dpi=dpi))
    size = (round(figsize[0] * dpi), round(figsize[1] * dpi))
    logger.info("PWLU plot: wrote %s (%d panels, %dx%d px)", output, len(drawn), *size)
    return ActivationPlot(
        path=output,
        layers_plotted=len(drawn),
        layers_total=len(units),
        titles=tuple(ax.get_title() for ax in drawn),
        size_px=size,
    )

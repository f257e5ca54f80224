"""The PWLU in its inference form, in standard ops only: the path for TorchScript and ONNX.

Per unit, a table of N + 2 (slope, intercept) pairs (left piece, N intervals, right piece);
each element picks its bin with the region rule of :mod:`pwlu_det.layers.pwlu_reference` and
costs one multiply-add. Everything here is scriptable and exports to ONNX as Sub, Mul, Div,
Floor, Clip, Where, Gather and Add, so exported models need no custom operator.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["inference_tables", "pwlu_inference"]


def inference_tables(
    left_bound: Tensor,
    right_bound: Tensor,
    heights: Tensor,
    left_slope: Tensor,
    right_slope: Tensor,
) -> tuple[Tensor, Tensor]:
    """Slope and intercept tables, each ``(P, N + 2)``, of P units (P = 1: layer-wise).

    Args:
        left_bound, right_bound, left_slope, right_slope: ``(P,)`` (or 0-d for one unit).
        heights: ``(P, N + 1)`` (or ``(N + 1,)``).
    """
    heights = heights.reshape(-1, heights.shape[-1])
    units, n = heights.shape[0], heights.shape[1] - 1
    left = left_bound.reshape(units, 1)
    right = right_bound.reshape(units, 1)
    k_left = left_slope.reshape(units, 1)
    k_right = right_slope.reshape(units, 1)
    width = (right - left) / n
    inner_slope = (heights[:, 1:] - heights[:, :-1]) / width
    starts = left + torch.arange(n, dtype=heights.dtype, device=heights.device) * width
    inner_intercept = heights[:, :-1] - inner_slope * starts
    slope = torch.cat([k_left, inner_slope, k_right], dim=1)
    intercept = torch.cat(
        [heights[:, :1] - k_left * left, inner_intercept, heights[:, -1:] - k_right * right],
        dim=1,
    )
    return slope, intercept


def pwlu_inference(
    x: Tensor,
    left_bound: Tensor,
    right_bound: Tensor,
    slope: Tensor,
    intercept: Tensor,
    channel_dim: int,
) -> Tensor:
    """Apply P units given by their tables (see :func:`inference_tables`) to ``x``.

    Args:
        x: input; channel-wise units (P > 1) read channels from dim ``channel_dim``.
        left_bound, right_bound: ``(P,)`` bounds, for the bin choice.
        slope, intercept: ``(P, N + 2)`` tables.
        channel_dim: channel dimension of ``x`` (may be negative).
    """
    units = slope.shape[0]
    bins = slope.shape[1]
    n = bins - 2
    if channel_dim < 0:
        channel_dim += x.dim()
    shape = [1] * x.dim()
    if units > 1:
        shape[channel_dim] = units
    left = left_bound.reshape(shape)
    right = right_bound.reshape(shape)
    position = (x - left) * (torch.full_like(right, float(n)) / (right - left))
    interval = torch.nan_to_num(position, nan=0.0).floor().clamp(0, n - 1)
    index = interval + 1  # a NaN x uses interval 0, and its output stays NaN
    index = torch.where(x < left, torch.zeros_like(index), index)
    index = torch.where(x >= right, torch.full_like(index, float(n + 1)), index)
    flat_index = index.long()
    if units > 1:
        row = torch.arange(units, device=x.device) * bins
        flat_index = flat_index + row.reshape(shape)
    return slope.reshape(-1)[flat_index] * x + intercept.reshape(-1)[flat_index]

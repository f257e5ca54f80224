"""The PWLU in its inference form, in standard ops only: the path for TorchScript and ONNX.

Per unit, a table of N + 2 (slope, intercept) pairs (left piece, N intervals, right piece);
each element's bin is ``clamp(floor((x - B_L) * N / (B_R - B_L)), -1, N) + 1`` and it costs
one multiply-add. Unlike the fused op, the bin comes from one clamp, not from comparisons with
the bounds, so an input within rounding of B_R may use the last interval instead of the right
piece: the value is the same up to rounding (the function is continuous). A NaN input uses
bin 1 and gives NaN. Everything here is scriptable and exports to ONNX as Sub, Mul, Floor,
Clip, IsNaN, Where, Cast, Gather and Add, so exported models need no custom operator.
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
    scale = torch.full_like(left, float(n)) / (right_bound.reshape(shape) - left)
    # Bin - 1 in [-1, N]: -1 is the left piece, N the right one (one Clip, no comparisons).
    position = ((x - left) * scale).floor().clamp(-1, n)
    position = torch.where(torch.isnan(position), torch.zeros_like(position), position)
    # Row start of each unit in the flattened tables, plus 1 for the shift of the bin.
    offset = torch.arange(units, dtype=x.dtype, device=x.device) * bins + 1
    flat_index = (position + offset.reshape(shape)).long()
    return slope.reshape(-1)[flat_index] * x + intercept.reshape(-1)[flat_index]

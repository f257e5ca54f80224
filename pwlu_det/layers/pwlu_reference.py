"""The PWLU in plain PyTorch ops: the test oracle and the export path.

Its gradients come from autograd through the formula below, independently of the closed-form
gradients of the fused kernels, which is what makes it a useful oracle.

Region of an element (the same in every backend):

- ``x < B_L``: left, ``f = Y_0 + (x - B_L) * K_L``;
- ``x >= B_R``: right, ``f = Y_N + (x - B_R) * K_R``;
- otherwise (NaN included): interval ``i = clamp(floor(p), 0, N - 1)`` with
  ``p = (x - B_L) * (N / (B_R - B_L))`` (a NaN ``x`` uses interval 0), ``u = p - i`` and
  ``f = Y_i + u * (Y_{i+1} - Y_i)``.

Infinite inputs follow IEEE arithmetic: ``f(+inf) = Y_N + inf * K_R`` is NaN when ``K_R = 0``.
"""

from __future__ import annotations

import torch

__all__ = ["breakpoints", "pwlu_reference", "unit_view"]


def breakpoints(
    left_bound: torch.Tensor, right_bound: torch.Tensor, num_intervals: int
) -> torch.Tensor:
    """The N + 1 breakpoints ``B_L + i * (B_R - B_L) / N`` of each unit, in a new last dimension.

    Args:
        left_bound, right_bound: the bounds, any (same) shape, e.g. 0-d or ``(C,)``.
        num_intervals: N.

    Returns:
        ``(*bounds.shape, N + 1)``, in the bounds' dtype.
    """
    steps = torch.arange(num_intervals + 1, dtype=left_bound.dtype, device=left_bound.device)
    width = (right_bound - left_bound).unsqueeze(-1) / num_intervals
    return left_bound.unsqueeze(-1) + steps * width


def unit_view(param: torch.Tensor, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """View a per-unit parameter (0-d or ``(C,)``) so that it broadcasts against ``x``.

    Args:
        param: a 0-d tensor (layer-wise) or a ``(C,)`` tensor (channel-wise).
        x: the input; ``C == x.shape[channel_dim]``.
        channel_dim: a non-negative dimension of ``x``.
    """
    if param.dim() == 0:
        return param
    shape = [1] * x.dim()
    shape[channel_dim] = param.shape[0]
    return param.reshape(shape)


def pwlu_reference(
    x: torch.Tensor,
    left_bound: torch.Tensor,
    right_bound: torch.Tensor,
    heights: torch.Tensor,
    left_slope: torch.Tensor,
    right_slope: torch.Tensor,
    channel_dim: int = 1,
) -> torch.Tensor:
    """PWLU forward in plain, differentiable PyTorch ops (no validation: see ``pwlu``).

    Args:
        x: input of any shape; float16/bfloat16 are computed in float32.
        left_bound, right_bound, left_slope, right_slope: 0-d (layer-wise) or ``(C,)``.
        heights: ``(N + 1,)`` (layer-wise) or ``(C, N + 1)``.
        channel_dim: non-negative channel dimension of ``x`` (unused when layer-wise).

    Returns:
        A tensor like ``x``, in ``x``'s dtype.
    """
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xc = x.to(compute_dtype)
    num_intervals = heights.shape[-1] - 1
    bl, br, kl, kr = (
        unit_view(p.to(compute_dtype), x, channel_dim)
        for p in (left_bound, right_bound, left_slope, right_slope)
    )
    heights = heights.to(compute_dtype)

    left = xc < bl
    right = xc >= br
    inside = ~(left | right)
    # Each branch sees only its own elements (others get a harmless stand-in), so that an
    # unselected branch never produces inf/NaN that would leak into gradients through where().
    x_left = torch.where(left, xc, bl)
    x_right = torch.where(right, xc, br)
    x_inside = torch.where(inside, xc, bl)

    position = (x_inside - bl) * (num_intervals / (br - bl))
    index = torch.nan_to_num(position.detach(), nan=0.0).floor().clamp(0, num_intervals - 1)
    index = index.long()
    fraction = position - index
    if heights.dim() == 1:
        flat_index = index
    else:  # row c of the (C, N + 1) table holds the heights of channel c
        row_start = torch.arange(heights.shape[0], device=x.device) * (num_intervals + 1)
        flat_index = index + unit_view(row_start, x, channel_dim)
    flat_heights = heights.reshape(-1)
    y_low = flat_heights[flat_index]
    y_high = flat_heights[flat_index + 1]
    y_first = unit_view(heights[..., 0], x, channel_dim)
    y_last = unit_view(heights[..., -1], x, channel_dim)

    f_inside = y_low + fraction * (y_high - y_low)
    f_left = y_first + (x_left - bl) * kl
    f_right = y_last + (x_right - br) * kr
    out = torch.where(left, f_left, torch.where(right, f_right, f_inside))
    return out.to(x.dtype)

"""The PWLU in its inference form, in standard ops only: the path for TorchScript and ONNX.

:class:`PWLUInference` is a trained unit frozen in this form (its tables as buffers); it is what
:func:`pwlu_det.layers.to_inference_form` puts in place of each PWLU of a model.

Per unit, a table of N + 2 (slope, intercept) pairs (left piece, N intervals, right piece) and
an affine map to the bin: ``bin = clamp(floor(x * scale + shift), 0, N + 1)`` with
``scale = N / (B_R - B_L)`` and ``shift = 1 - B_L * scale``; each element then costs one
multiply-add, ``slope[bin] * x + intercept[bin]``. Unlike the fused op, the bin comes from one
clamp, not from comparisons with the bounds, so an input within rounding of a breakpoint may use
the piece on its other side: the value is the same up to rounding (the function is continuous).
A NaN input gives NaN (its bin is any valid one).

The lookups are ``gather`` along the bin axis of the tables broadcast to x viewed as
``(outer, P, inner)``. In PyTorch (and TorchScript) one gather of complex numbers fetches slope
and intercept together. An ONNX export uses two GatherElements, which onnxruntime runs several
times faster than Gather on a flattened table, with the bin cast to int32 (half the index
traffic of int64); its graph holds only Mul, Add, Clip, Cast, GatherElements, Reshape,
Transpose, Expand and shape ops, so exported models need no custom operator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .pwlu_reference import breakpoints

__all__ = ["PWLUInference", "inference_tables", "pwlu_inference"]


def inference_tables(
    left_bound: Tensor,
    right_bound: Tensor,
    heights: Tensor,
    left_slope: Tensor,
    right_slope: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The inference form of P units (P = 1: layer-wise): ``(scale, shift, slope, intercept)``.

    Args:
        left_bound, right_bound, left_slope, right_slope: ``(P,)`` (or 0-d for one unit).
        heights: ``(P, N + 1)`` (or ``(N + 1,)``).

    Returns:
        ``scale`` and ``shift``, each ``(P,)``: the bin map ``x * scale + shift``;
        ``slope`` and ``intercept``, each ``(P, N + 2)``: the pieces, left to right.
    """
    heights = heights.reshape(-1, heights.shape[-1])
    units, n = heights.shape[0], heights.shape[1] - 1
    left = left_bound.reshape(units, 1)
    right = right_bound.reshape(units, 1)
    k_left = left_slope.reshape(units, 1)
    k_right = right_slope.reshape(units, 1)
    width = (right - left) / n
    inner_slope = (heights[:, 1:] - heights[:, :-1]) / width
    starts = breakpoints(left_bound.reshape(units), right_bound.reshape(units), n)[:, :-1]
    inner_intercept = heights[:, :-1] - inner_slope * starts
    slope = torch.cat([k_left, inner_slope, k_right], dim=1)
    intercept = torch.cat(
        [heights[:, :1] - k_left * left, inner_intercept, heights[:, -1:] - k_right * right],
        dim=1,
    )
    scale = n / (right - left)
    shift = 1.0 - left * scale
    return scale.reshape(units), shift.reshape(units), slope, intercept


def _as_units_view(x: Tensor, channel_dim: int | None) -> Tensor:
    """``x`` viewed as ``(outer, P, inner)``: channels in the middle, or all in one unit.

    Channels in the last dim (a linear layer's ``(N, C)``) give ``(1, C, N)``, a transposed
    view: the tables, broadcast to ``(outer, P, N + 2)`` for the lookup, then stay small.
    """
    if channel_dim is None:
        return x.reshape(1, 1, -1)
    if _channels_last(x, channel_dim):
        return x.reshape(-1, x.shape[-1]).t().unsqueeze(0)
    dim = channel_dim % x.dim()
    x = x.flatten(dim + 1)
    return x.flatten(0, dim - 1) if dim > 0 else x.unsqueeze(0)


def _from_units_view(y3: Tensor, x: Tensor, channel_dim: int | None) -> Tensor:
    """Inverse of :func:`_as_units_view`: ``y3`` in the shape of ``x``."""
    if channel_dim is not None and _channels_last(x, channel_dim):
        return y3.squeeze(0).t().reshape(x.shape)
    return y3.reshape(x.shape)


def _channels_last(x: Tensor, channel_dim: int) -> bool:
    """Channels in the last dim of ``x``: the transposed view of :func:`_as_units_view`."""
    return channel_dim % x.dim() == x.dim() - 1


def pwlu_inference(
    x: Tensor,
    scale: Tensor,
    shift: Tensor,
    slope: Tensor,
    intercept: Tensor,
    channel_dim: int | None,
    num_intervals: int,
) -> Tensor:
    """Apply P units given in their inference form (see :func:`inference_tables`) to ``x``.

    The sizes come as Python numbers, not from the tables' shapes, so that a traced model
    holds them as constants.

    Args:
        x: input; channel-wise units read channels from dim ``channel_dim``.
        scale, shift: ``(P,)``, the map from x to the bin.
        slope, intercept: ``(P, N + 2)`` tables.
        channel_dim: channel dimension of ``x`` (may be negative), None for one layer-wise unit.
        num_intervals: N.

    Returns:
        ``f(x)``, same shape as ``x``.
    """
    x3 = _as_units_view(x, channel_dim)
    last_bin = num_intervals + 1
    position = torch.addcmul(shift.reshape(1, -1, 1), x3, scale.reshape(1, -1, 1))
    table_shape = [x3.shape[0], x3.shape[1], last_bin + 1]
    slopes = slope.unsqueeze(0).expand(table_shape)
    intercepts = intercept.unsqueeze(0).expand(table_shape)
    if torch.jit.is_scripting():
        y = _lookup(position, x3, slopes, intercepts, last_bin)
    else:
        y = _lookup_traceable(position, x3, slopes, intercepts, last_bin)
    return _from_units_view(y, x, channel_dim)


def _lookup(
    position: Tensor, x3: Tensor, slopes: Tensor, intercepts: Tensor, last_bin: int
) -> Tensor:
    """``slope[bin] * x + intercept[bin]`` with ``bin = clamp(floor(position), 0, last_bin)``.

    ``position`` is overwritten (in-place ops: fewer passes over memory).
    """
    # NaN -> bin 0 (the result is NaN anyway); after the clamp, truncation is floor.
    bins = position.nan_to_num_(0.0).clamp_(0.0, float(last_bin)).long()
    # Slope and intercept as one complex number: one gather fetches both (~25% faster).
    pieces = torch.view_as_real(torch.complex(slopes, intercepts).gather(2, bins))
    return torch.addcmul(pieces[..., 1], pieces[..., 0], x3)


class _LookupInt32(torch.autograd.Function):
    """:func:`_lookup`, exported to ONNX with int32 bins (torch's gather needs int64)."""

    @staticmethod
    def forward(ctx, position, x3, slopes, intercepts, last_bin):
        return _lookup(position, x3, slopes, intercepts, last_bin)

    @staticmethod
    def symbolic(g, position, x3, slopes, intercepts, last_bin: int):
        # Clip, then cast to int32 (truncation: floor for >= 0). A NaN survives the Clip and
        # casts to an arbitrary integer, which the second Clip makes a valid bin.
        position = g.op(
            "Clip",
            position,
            g.op("Constant", value_t=torch.tensor(0.0)),
            g.op("Constant", value_t=torch.tensor(float(last_bin))),
        )
        bins = g.op("Cast", position, to_i=6)  # 6: onnx.TensorProto.INT32
        bins = g.op(
            "Clip",
            bins,
            g.op("Constant", value_t=torch.tensor(0, dtype=torch.int32)),
            g.op("Constant", value_t=torch.tensor(last_bin, dtype=torch.int32)),
        )
        slope = g.op("GatherElements", slopes, bins, axis_i=2)
        intercept = g.op("GatherElements", intercepts, bins, axis_i=2)
        return g.op("Add", g.op("Mul", slope, x3), intercept)


@torch.jit.unused
def _lookup_traceable(
    position: Tensor, x3: Tensor, slopes: Tensor, intercepts: Tensor, last_bin: int
) -> Tensor:
    """:func:`_lookup`, or its int32 form while exporting to ONNX."""
    if torch.onnx.is_in_onnx_export():
        return _LookupInt32.apply(position, x3, slopes, intercepts, last_bin)
    return _lookup(position, x3, slopes, intercepts, last_bin)


class PWLUInference(nn.Module):
    """P units in their inference form: ``f(x)`` by a table lookup in standard ops.

    Scriptable and traceable; ONNX exports use only standard operators. The tables are buffers
    (they follow ``.to()`` and are saved in the state dict) and nothing is learned.

    Args:
        scale, shift, slope, intercept: the tables of :func:`inference_tables`.
        channel_dim: channel dimension of the input, None for one layer-wise unit.
    """

    def __init__(
        self,
        scale: Tensor,
        shift: Tensor,
        slope: Tensor,
        intercept: Tensor,
        channel_dim: int | None,
    ):
        super().__init__()
        self.num_intervals = slope.shape[-1] - 2
        self.channel_dim = channel_dim
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())
        self.register_buffer("slope", slope.detach().clone())
        self.register_buffer("intercept", intercept.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """``f(x)``, same shape as ``x``."""
        return pwlu_inference(
            x, self.scale, self.shift, self.slope, self.intercept, self.channel_dim,
            self.num_intervals,
        )  # fmt: skip

    def extra_repr(self) -> str:
        units = "layer-wise" if self.channel_dim is None else f"{self.scale.numel()} channels"
        return f"N={self.num_intervals}, {units}"

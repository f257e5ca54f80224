"""The Triton kernels of the PWLU op (the host side that launches them is :mod:`.pwlu_triton`).

How a kernel sees an element. Memory is an ``(outer, channels, inner)`` array (see
:func:`.pwlu_triton.memory_view`); a tile is ``[BLOCK_R, BLOCK_C, BLOCK_I]`` of it. Every element
falls in one of ``N + 2`` *bins*: bin 0 is the left piece (``x < B_L``), bin ``N + 1`` the right
piece (``x >= B_R``) and bin ``1 + i`` the inner interval ``i`` (a NaN ``x`` lands in interval 0,
as in :mod:`.pwlu_reference`). Each bin has a local coordinate ``w`` (``x - B_L``, ``x - B_R``,
or ``u``, the position inside the interval) in which the unit is linear::

    f(x) = base[bin] + w * slope[bin]

with ``base = (Y_0, Y_0, ..., Y_{N-1}, Y_N)`` and ``slope = (K_L, Y_1 - Y_0, ..., Y_N - Y_{N-1},
K_R)``: the reference's arithmetic, read straight from the raw parameters (no host tables).
``N / (B_R - B_L)`` is computed as the reference computes it, ``N * (1 / (B_R - B_L))``, with the
reciprocal an IEEE division (``div_rn``): Triton's fp32 ``/`` is approximate, and the bin of an
element next to a breakpoint would drift from the reference's.

The backward needs two sums per unit and bin, ``S0 = sum(g)`` and ``S1 = sum(g * w)``; every
parameter gradient follows from them in closed form (:func:`_pwlu_param_grad_kernel`).

``INDEX_64``: every offset into x, y, g, grad_x and the partial sums is computed in int64 (the
program id, and each scalar factor, is widened before it is multiplied). Shape integers are not
specialised (``do_not_specialize``): one compiled kernel serves every FPN level and RoI count.
"""

from __future__ import annotations

import triton
import triton.language as tl

_SHAPE_ARGS = ("outer", "channels", "inner", "num_intervals")


@triton.jit
def _compute_dtype(value, F64: tl.constexpr):
    """``value`` in the compute dtype: float64 for float64 inputs, else float32."""
    if F64:  # noqa: SIM108 (a compile-time branch: only one side is built)
        out = value.to(tl.float64)
    else:
        out = value.to(tl.float32)
    return out


@triton.jit
def _unit_params(lb_ptr, rb_ptr, ls_ptr, rs_ptr, chan, chan_mask, num_intervals, F64: tl.constexpr):
    """B_L, B_R, K_L, K_R and ``N / (B_R - B_L)`` of the units ``chan``, in the compute dtype."""
    left_bound = _compute_dtype(tl.load(lb_ptr + chan, mask=chan_mask, other=0.0), F64)
    right_bound = _compute_dtype(tl.load(rb_ptr + chan, mask=chan_mask, other=1.0), F64)
    left_slope = _compute_dtype(tl.load(ls_ptr + chan, mask=chan_mask, other=0.0), F64)
    right_slope = _compute_dtype(tl.load(rs_ptr + chan, mask=chan_mask, other=0.0), F64)
    # The reference's N / (B_R - B_L) is torch's scalar / tensor, computed as reciprocal(width) * N:
    # the same two roundings here, the reciprocal an IEEE division.
    width = right_bound - left_bound
    one = tl.full(width.shape, 1.0, width.dtype)
    if F64:  # noqa: SIM108 (a compile-time branch: only one side is built)
        inv_width = one / width  # fp64 division is IEEE in Triton
    else:
        inv_width = tl.math.div_rn(one, width)
    scale = inv_width * _compute_dtype(num_intervals, F64)
    return left_bound, right_bound, left_slope, right_slope, scale


@triton.jit
def _locate(x, left_bound, right_bound, scale, num_intervals):
    """Bin of each element (0 left, 1 + i interval i, N + 1 right) and its local coordinate.

    Same rules and order of operations as the reference: left if x < B_L, right if x >= B_R,
    else i = clamp(floor(p), 0, N - 1) with p = (x - B_L) * scale (NaN -> 0).
    """
    position = (x - left_bound) * scale
    index = tl.floor(position)
    index = tl.where(index != index, 0.0, index)  # NaN x: interval 0 (u stays NaN)
    # Clamp before the int conversion: outer elements may have |p| = inf or huge.
    index = tl.minimum(tl.maximum(index, 0.0), num_intervals - 1.0)
    is_left = x < left_bound
    is_right = x >= right_bound
    bin_ = tl.where(is_left, 0, tl.where(is_right, num_intervals + 1, index.to(tl.int32) + 1))
    w = tl.where(is_left, x - left_bound, tl.where(is_right, x - right_bound, position - index))
    return bin_, w


@triton.jit
def _bin_heights(h_ptr, chan, bin_, mask, num_intervals, F64: tl.constexpr):
    """``Y_lo`` and ``Y_hi`` of each element's bin: (Y_0, Y_0) left, (Y_i, Y_{i+1}) in
    interval i, (Y_N, Y_N) right; heights is a contiguous (P, N + 1) table."""
    row = h_ptr + chan * (num_intervals + 1)
    low = tl.minimum(tl.maximum(bin_ - 1, 0), num_intervals)
    high = tl.minimum(bin_, num_intervals)
    y_low = _compute_dtype(tl.load(row + low, mask=mask, other=0.0), F64)
    y_high = _compute_dtype(tl.load(row + high, mask=mask, other=0.0), F64)
    return y_low, y_high


@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _pwlu_forward_kernel(
    x_ptr,
    y_ptr,
    lb_ptr,
    rb_ptr,
    h_ptr,
    ls_ptr,
    rs_ptr,
    outer,
    channels,
    inner,
    num_intervals,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_I: tl.constexpr,
    F64: tl.constexpr,
    INDEX_64: tl.constexpr,
):
    """y = f(x), one [BLOCK_R, BLOCK_C, BLOCK_I] tile per program; the units' parameters are
    read once per program, per channel of the tile."""
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
        row_stride = tl.cast(channels, tl.int64) * inner
    else:
        row_stride = channels * inner
    n_c_blocks = tl.cdiv(channels, BLOCK_C)
    n_i_blocks = tl.cdiv(inner, BLOCK_I)
    c_block = pid % n_c_blocks
    rest = pid // n_c_blocks
    i_block = rest % n_i_blocks
    r_block = rest // n_i_blocks

    row = r_block * BLOCK_R + tl.arange(0, BLOCK_R)[:, None, None]
    chan = c_block * BLOCK_C + tl.arange(0, BLOCK_C)[None, :, None]
    pos = i_block * BLOCK_I + tl.arange(0, BLOCK_I)[None, None, :]
    chan_mask = chan < channels
    mask = chan_mask & (pos < inner) & (row < outer)
    offs = row * row_stride + chan * inner + pos

    left_bound, right_bound, left_slope, right_slope, scale = _unit_params(
        lb_ptr, rb_ptr, ls_ptr, rs_ptr, chan, chan_mask, num_intervals, F64
    )
    x = _compute_dtype(tl.load(x_ptr + offs, mask=mask, other=0.0), F64)
    bin_, w = _locate(x, left_bound, right_bound, scale, num_intervals)
    y_low, y_high = _bin_heights(h_ptr, chan, bin_, mask, num_intervals, F64)
    slope = tl.where(
        bin_ == 0, left_slope, tl.where(bin_ > num_intervals, right_slope, y_high - y_low)
    )
    y = y_low + w * slope
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=(*_SHAPE_ARGS, "n_split", "steps"))
def _pwlu_backward_kernel(
    x_ptr,
    g_ptr,  # upstream gradient, same strides as x
    gx_ptr,
    lb_ptr,
    rb_ptr,
    h_ptr,
    ls_ptr,
    rs_ptr,
    sums_ptr,  # (2, n_split, P, N + 2): per-program S0 and S1
    outer,
    channels,
    inner,
    num_intervals,
    n_split,
    steps,
    GROUPS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_I: tl.constexpr,
    NB_PAD: tl.constexpr,  # next power of two >= N + 2
    F64: tl.constexpr,
    INDEX_64: tl.constexpr,
):
    """grad_x, and per-program sums S0 = sum(g), S1 = sum(g * w) per channel and bin.

    Program ``(c_block, split)`` owns BLOCK_C channels and walks the tiles ``t`` of those
    channels with ``t % n_split == split`` (tile ``t`` is row block ``t // n_i_blocks``, inner
    block ``t % n_i_blocks``), GROUPS tiles per step: a step is a
    ``[GROUPS, BLOCK_R, BLOCK_C, BLOCK_I]`` block whose first axis holds one warp's tile each.
    Per bin present in the step, S0 and S1 are reduced together (one reduction of the pair)
    over that tile's rows and inner positions only, so within each warp, into per-warp
    ``[GROUPS, BLOCK_C, NB_PAD]`` partials; the warps' partials are combined once, at the end,
    and written once: no atomics, and a deterministic result.
    """
    pid = tl.program_id(0)
    if INDEX_64:  # before any multiply: chan * inner alone can pass 2^31 in NCHW
        pid = pid.to(tl.int64)
        row_stride = tl.cast(channels, tl.int64) * inner
        plane = tl.cast(n_split, tl.int64) * channels * (num_intervals + 2)
        tile_step = tl.cast(n_split, tl.int64) * GROUPS
    else:
        row_stride = channels * inner
        plane = n_split * channels * (num_intervals + 2)
        tile_step = n_split * GROUPS
    c_block = pid % tl.cdiv(channels, BLOCK_C)
    split = pid // tl.cdiv(channels, BLOCK_C)
    n_i_blocks = tl.cdiv(inner, BLOCK_I)
    n_tiles = tl.cdiv(outer, BLOCK_R) * n_i_blocks

    group = tl.arange(0, GROUPS)[:, None, None, None]
    r = tl.arange(0, BLOCK_R)[None, :, None, None]
    chan = c_block * BLOCK_C + tl.arange(0, BLOCK_C)[None, None, :, None]
    i = tl.arange(0, BLOCK_I)[None, None, None, :]
    chan_mask = chan < channels
    col_offs = chan * inner
    num_bins = num_intervals + 2

    left_bound, right_bound, left_slope, right_slope, scale = _unit_params(
        lb_ptr, rb_ptr, ls_ptr, rs_ptr, chan, chan_mask, num_intervals, F64
    )
    bin_ids = tl.arange(0, NB_PAD)[None, None, :]
    acc_g = tl.zeros([GROUPS, BLOCK_C, NB_PAD], dtype=left_bound.dtype)
    acc_gw = tl.zeros([GROUPS, BLOCK_C, NB_PAD], dtype=left_bound.dtype)
    # Tile ids advance by additions only (no i32 step * stride product).
    tile = split * GROUPS + group
    for _ in range(steps):
        row = (tile // n_i_blocks) * BLOCK_R + r
        pos = (tile % n_i_blocks) * BLOCK_I + i
        mask = chan_mask & (tile < n_tiles) & (row < outer) & (pos < inner)
        offs = row * row_stride + col_offs + pos
        x = _compute_dtype(tl.load(x_ptr + offs, mask=mask, other=0.0), F64)
        g = _compute_dtype(tl.load(g_ptr + offs, mask=mask, other=0.0), F64)
        bin_, w = _locate(x, left_bound, right_bound, scale, num_intervals)
        y_low, y_high = _bin_heights(h_ptr, chan, bin_, mask, num_intervals, F64)
        dfdx = tl.where(
            bin_ == 0,
            left_slope,
            tl.where(bin_ > num_intervals, right_slope, (y_high - y_low) * scale),
        )
        tl.store(gx_ptr + offs, (g * dfdx).to(gx_ptr.dtype.element_ty), mask=mask)

        gw = g * w
        bin_ = tl.where(mask, bin_, -1)  # masked lanes join no bin
        # Visit only the bins present in this step (often far fewer than N + 2).
        lowest = tl.min(tl.where(mask, bin_, NB_PAD))
        highest = tl.max(bin_)
        for b in range(lowest, highest + 1):
            in_bin = bin_ == b
            # S0 and S1 in one reduction: a trailing pair axis, summed over rows and positions.
            both = tl.join(tl.where(in_bin, g, 0.0), tl.where(in_bin, gw, 0.0))
            s_g, s_gw = tl.split(tl.sum(tl.sum(both, axis=3), axis=1))  # [GROUPS, BLOCK_C]
            hit = bin_ids == b
            acc_g += tl.where(hit, s_g[:, :, None], 0.0)
            acc_gw += tl.where(hit, s_gw[:, :, None], 0.0)
        tile += tile_step

    # sums[k, split, chan, bin]
    out_chan = c_block * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    out_bins = tl.arange(0, NB_PAD)[None, :]
    out_offs = (split * channels + out_chan) * num_bins + out_bins
    out_mask = (out_chan < channels) & (out_bins < num_bins)
    tl.store(sums_ptr + out_offs, tl.sum(acc_g, axis=0), mask=out_mask)
    tl.store(sums_ptr + plane + out_offs, tl.sum(acc_gw, axis=0), mask=out_mask)


@triton.jit(do_not_specialize=("units", "num_intervals", "n_split"))
def _pwlu_param_grad_kernel(
    sums_ptr,  # (2, n_split, P, N + 2)
    lb_ptr,
    rb_ptr,
    h_ptr,
    ls_ptr,
    rs_ptr,
    g_lb_ptr,
    g_rb_ptr,
    g_h_ptr,
    g_ls_ptr,
    g_rs_ptr,
    units,
    num_intervals,
    n_split,
    BLOCK_P: tl.constexpr,
    NB_PAD: tl.constexpr,
    F64: tl.constexpr,
):
    """The five parameter gradients of BLOCK_P units from the per-program sums, in float64.

    The partial sums are added in a fixed order (deterministic). Inside interval ``i`` (bin
    ``1 + i``) ``f = Y_i + u (Y_{i+1} - Y_i)`` with ``u = p - i``, ``p = (x - B_L) N / (B_R -
    B_L)``, ``t = p / N``, ``K_i = (Y_{i+1} - Y_i) N / (B_R - B_L)``: ``df/dY_i = 1 - u``,
    ``df/dY_{i+1} = u``, ``df/dB_L = -K_i (1 - t)``, ``df/dB_R = -K_i t``; summed over the bin,
    ``sum(g t) = (i S0_i + S1_i) / N``. The outer pieces give ``df/dY_0 = 1``, ``df/dB_L =
    -K_L``, ``df/dK_L = x - B_L`` (left) and ``df/dY_N = 1``, ``df/dB_R = -K_R``, ``df/dK_R = x -
    B_R`` (right). Parameter values are used rounded to the compute dtype, as the main kernels
    use them; each gradient is stored in its parameter's dtype.
    """
    unit = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
    j = tl.arange(0, NB_PAD)[None, :]  # bin j, and height j
    num_bins = num_intervals + 2
    unit_mask = unit < units
    here_mask = unit_mask & (j < num_bins)
    next_mask = unit_mask & (j + 1 < num_bins)
    plane = n_split * units * num_bins
    s0_here = tl.zeros([BLOCK_P, NB_PAD], dtype=tl.float64)
    s1_here = tl.zeros([BLOCK_P, NB_PAD], dtype=tl.float64)
    s0_next = tl.zeros([BLOCK_P, NB_PAD], dtype=tl.float64)
    s1_next = tl.zeros([BLOCK_P, NB_PAD], dtype=tl.float64)
    offs = unit * num_bins + j
    for _ in range(n_split):
        s0_here += tl.load(sums_ptr + offs, mask=here_mask, other=0.0).to(tl.float64)
        s1_here += tl.load(sums_ptr + plane + offs, mask=here_mask, other=0.0).to(tl.float64)
        s0_next += tl.load(sums_ptr + offs + 1, mask=next_mask, other=0.0).to(tl.float64)
        s1_next += tl.load(sums_ptr + plane + offs + 1, mask=next_mask, other=0.0).to(tl.float64)
        offs += units * num_bins

    left_bound, right_bound, left_slope, right_slope, _ = _unit_params(
        lb_ptr, rb_ptr, ls_ptr, rs_ptr, unit, unit_mask, num_intervals, F64
    )
    left_bound = left_bound.to(tl.float64)
    right_bound = right_bound.to(tl.float64)
    left_slope = left_slope.to(tl.float64)
    right_slope = right_slope.to(tl.float64)
    h_row = h_ptr + unit * (num_intervals + 1)
    inner_mask = unit_mask & (j < num_intervals)  # interval j = bin j + 1 (the "next" sums)
    y_j = _compute_dtype(tl.load(h_row + j, mask=inner_mask, other=0.0), F64).to(tl.float64)
    y_j1 = _compute_dtype(tl.load(h_row + j + 1, mask=inner_mask, other=0.0), F64).to(tl.float64)
    n = num_intervals.to(tl.float64)
    k_in = (y_j1 - y_j) * ((1.0 / (right_bound - left_bound)) * n)  # as the reference rounds
    sum_gt = (j.to(tl.float64) * s0_next + s1_next) / n  # sum of g * t over interval j
    is_first = j == 0
    is_last = j == num_intervals
    g_left_bound = -left_slope * tl.sum(tl.where(is_first, s0_here, 0.0), axis=1)[:, None]
    g_left_bound -= tl.sum(tl.where(inner_mask, k_in * (s0_next - sum_gt), 0.0), axis=1)[:, None]
    g_right_bound = -right_slope * tl.sum(tl.where(is_last, s0_next, 0.0), axis=1)[:, None]
    g_right_bound -= tl.sum(tl.where(inner_mask, k_in * sum_gt, 0.0), axis=1)[:, None]
    g_heights = tl.where(inner_mask, s0_next - s1_next, 0.0)  # (1 - u) of interval j, to Y_j
    g_heights += tl.where((j >= 1) & (j <= num_intervals), s1_here, 0.0)  # u of interval j - 1
    g_heights += tl.where(is_first, s0_here, 0.0) + tl.where(is_last, s0_next, 0.0)
    g_left_slope = tl.sum(tl.where(is_first, s1_here, 0.0), axis=1)[:, None]
    g_right_slope = tl.sum(tl.where(is_last, s1_next, 0.0), axis=1)[:, None]

    first = unit_mask & is_first
    tl.store(g_lb_ptr + unit + 0 * j, g_left_bound.to(g_lb_ptr.dtype.element_ty), mask=first)
    tl.store(g_rb_ptr + unit + 0 * j, g_right_bound.to(g_rb_ptr.dtype.element_ty), mask=first)
    tl.store(g_ls_ptr + unit + 0 * j, g_left_slope.to(g_ls_ptr.dtype.element_ty), mask=first)
    tl.store(g_rs_ptr + unit + 0 * j, g_right_slope.to(g_rs_ptr.dtype.element_ty), mask=first)
    h_mask = unit_mask & (j <= num_intervals)
    tl.store(
        g_h_ptr + unit * (num_intervals + 1) + j,
        g_heights.to(g_h_ptr.dtype.element_ty),
        mask=h_mask,
    )

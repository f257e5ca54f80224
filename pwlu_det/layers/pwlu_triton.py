"""The Triton backend of the PWLU op: the CUDA kernels, registered with ``torch.library``.

Two operators, both built from Triton kernels with :func:`torch.library.triton_op` (so
``torch.compile`` sees the kernels and ``torch.export`` keeps the ops):

- ``torch.ops.pwlu_det.pwlu_triton_forward(x, left_bound, right_bound, heights, left_slope,
  right_slope, channel_dim) -> y``
- ``torch.ops.pwlu_det.pwlu_triton_backward(grad_y, x, <same five parameters>, channel_dim)
  -> (grad_x, g_left_bound, g_right_bound, g_heights, g_left_slope, g_right_slope)``

and an autograd formula on the forward op that saves only ``x`` and the parameters.

The parameters come in the canonical form of :mod:`pwlu_det.layers.pwlu_op`: ``(P,)`` for the
bounds and slopes, ``(P, N + 1)`` for the heights, ``P == 1`` (layer-wise: every element uses
unit 0) or ``P == x.shape[channel_dim]`` (channel-wise).

How the kernels see an element. Every element falls in one of ``N + 2`` *bins*: bin 0 is the
left piece (``x < B_L``), bin ``N + 1`` the right piece (``x >= B_R``) and bin ``1 + i`` the
inner interval ``i`` (a NaN ``x`` lands in interval 0, as in
:mod:`pwlu_det.layers.pwlu_reference`). Each bin has a local coordinate ``w`` (``x - B_L``,
``x - B_R``, or ``u`` = the position inside the interval) in which the unit is linear::

    f(x) = base[bin] + w * slope[bin]

with ``base = (Y_0, Y_0, ..., Y_{N-1}, Y_N)`` and ``slope = (K_L, Y_1 - Y_0, ...,
Y_N - Y_{N-1}, K_R)`` — the same arithmetic as the reference. The backward kernel needs only
two sums per bin and unit, ``S0 = sum(g)`` and ``S1 = sum(g * w)``; every parameter gradient
follows from them in closed form (see :func:`_parameter_gradients`).

Memory layout. A dense, non-overlapping tensor (contiguous, channels_last, any permutation) is
walked in memory order; the channel of the element at memory offset ``o`` is
``(o // x.stride(channel_dim)) % C``. Equivalently memory is an ``(outer, C, inner)`` array with
``inner = x.stride(channel_dim)``, which is how the backward kernel tiles it, so that each
program can reduce per channel. Other tensors (non-dense views) are made contiguous first.

Launches. Each runs with ``x``'s GPU current (so on its current stream, not device 0's), and
switches to 64-bit offsets (``INDEX_64``) when one could pass 2^31 elements; then every offset
into x, y, g, grad_x and the partial sums is int64 before any multiply, which
:func:`check_int64_offsets` verifies in the TTIR. No launch reads a value back to the host.

On machines without a GPU the kernels run on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, read when this module is first imported), and
:func:`compile_for_targets` builds real cubin for sm_80 / sm_90 without a GPU.

Versions: torch >= 2.11 (``torch.library.triton_op``, ``wrap_triton``, ``register_autograd``)
and Triton >= 3.6 for the kernels; the ahead-of-time helpers use Triton's internal compiler
API (``ASTSource``, ``GPUTarget``), checked with Triton 3.8 only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence

import torch
from torch._subclasses.fake_tensor import is_fake

__all__ = [
    "KernelBuild",
    "OffsetCheck",
    "available",
    "check_int64_offsets",
    "compile_for_targets",
    "i32_offset_multiplies",
    "unavailable_reason",
]

logger = logging.getLogger(__name__)

try:
    import triton
    import triton.language as tl
except Exception as e:  # ImportError, or a triton that fails while importing
    triton = None
    tl = None
    _IMPORT_ERROR: str | None = f"triton could not be imported: {type(e).__name__}: {e}"
else:
    _IMPORT_ERROR = None

# Elements per program in the forward kernel and per loop step (tile) in the backward kernel.
_FORWARD_BLOCK = 1024
_BACKWARD_TILE = 1024
# Channels per backward tile at most: the two per-program accumulators hold
# BLOCK_C * next_pow2(N + 2) values each, which must stay a few registers per thread.
_MAX_BLOCK_C = 8
# The backward kernel loops over row blocks so that a grid has about this many programs at
# most: it bounds the partial-sums buffer to a small fraction of the input.
_BACKWARD_MAX_PROGRAMS = 2048
# 8 warps: 4 elements per thread per tile; measured (ptxas, sm_80/sm_90) 32 registers forward,
# 48-80 backward and no spills, against 55-64 / 80-168 (with spills) for 4 warps.
_NUM_WARPS = 8
_INT32_MAX = 2**31 - 1


def available() -> bool:
    """True when Triton can be imported (the kernels still need CUDA or ``TRITON_INTERPRET=1``)."""
    return _IMPORT_ERROR is None


def unavailable_reason() -> str:
    """Why :func:`available` is False (empty when it is True)."""
    return _IMPORT_ERROR or ""


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _needs_int64(*extents: int) -> bool:
    """True when an offset up to any of ``extents`` (in elements) may not fit in int32."""
    return max(extents) > _INT32_MAX


def _traceable(kernel):
    """``torch.library.wrap_triton(kernel)``, or the kernel itself under the interpreter.

    With ``TRITON_INTERPRET=1`` the kernels are ``InterpretedFunction`` objects, which only run
    eagerly; ``wrap_triton`` accepts them only from torch 2.12 on (pytorch#185597) and then
    returns them unchanged, so they are launched directly here on every version.
    """
    if isinstance(kernel, triton.runtime.jit.JITFunction):
        return torch.library.wrap_triton(kernel)
    return kernel


def _device_guard(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``x``'s GPU the current device around a launch; a no-op otherwise.

    Triton launches on the current device and its current stream. Without the guard, ``x`` on
    ``cuda:1`` while device 0 is current is an illegal address (or, with peer access, a kernel
    on the wrong GPU, unordered with the work that produced ``x``). CPU tensors (the
    interpreter) and fake tensors (tracing: ``torch.compile`` emits its own guard) need none.
    """
    if x.device.type != "cuda" or is_fake(x):
        return contextlib.nullcontext()
    return torch.cuda.device(x.device)


# --------------------------------------------------------------------------------------------
# Host-side helpers (plain torch; also run with fake tensors when the ops are traced)
# --------------------------------------------------------------------------------------------


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _is_dense(t: torch.Tensor) -> bool:
    """True when ``t`` covers a gap-free block of memory (some permutation of contiguous)."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride(), strict=True), key=lambda s: s[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _check_params(
    x: torch.Tensor, params: Sequence[torch.Tensor], channel_dim: int
) -> tuple[int, int]:
    """Check the canonical parameter shapes; return ``(P, N)``."""
    left_bound, right_bound, heights, left_slope, right_slope = params
    if heights.dim() != 2 or heights.shape[1] < 2:
        raise ValueError(
            f"pwlu_triton: heights must be (P, N + 1) with N >= 1, got {tuple(heights.shape)}"
        )
    units = heights.shape[0]
    for name, p in (
        ("left_bound", left_bound),
        ("right_bound", right_bound),
        ("left_slope", left_slope),
        ("right_slope", right_slope),
    ):
        if tuple(p.shape) != (units,):
            raise ValueError(
                f"pwlu_triton: {name} must have shape ({units},), got {tuple(p.shape)}"
            )
    if units != 1 and (not 0 <= channel_dim < x.dim() or x.shape[channel_dim] != units):
        raise ValueError(
            f"pwlu_triton: {units} parameter sets need x.shape[channel_dim] == {units}; x "
            f"has shape {tuple(x.shape)}, channel_dim={channel_dim}"
        )
    return units, heights.shape[1] - 1


def _as_dense(x: torch.Tensor) -> torch.Tensor:
    return x if _is_dense(x) else x.contiguous()


def _memory_view(x: torch.Tensor, units: int, channel_dim: int) -> tuple[int, int, int]:
    """``(outer, channels, inner)``: dense ``x`` in memory order as an (outer, C, inner) array.

    Layer-wise units (and a single channel) ignore the channel: ``(numel, 1, 1)``.
    """
    if units == 1:
        return x.numel(), 1, 1
    inner = x.stride(channel_dim)
    return x.numel() // (units * inner), units, inner


def _unit_tables(
    params: Sequence[torch.Tensor], compute_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-unit tables for the kernels, in the compute dtype.

    Returns:
        ``unit`` ``(P, 3)``: B_L, B_R and ``N / (B_R - B_L)`` (the reference's exact expression,
        so that bin choice at breakpoints matches it); ``base`` and ``slope`` ``(P, N + 2)``:
        ``f = base[bin] + w * slope[bin]``; ``dfdx`` ``(P, N + 2)``: the slope in ``x`` of
        each bin (K_L, K_0..K_{N-1}, K_R).
    """
    bl, br, heights, kl, kr = (p.to(compute_dtype) for p in params)
    n = heights.shape[1] - 1
    scale = n / (br - bl)
    unit = torch.stack([bl, br, scale], dim=1).contiguous()
    rise = heights[:, 1:] - heights[:, :-1]
    base = torch.cat([heights[:, :1], heights[:, :-1], heights[:, -1:]], dim=1).contiguous()
    slope = torch.cat([kl[:, None], rise, kr[:, None]], dim=1).contiguous()
    dfdx = torch.cat([kl[:, None], rise * scale[:, None], kr[:, None]], dim=1).contiguous()
    return unit, base, slope, dfdx


def _parameter_gradients(
    s0: torch.Tensor, s1: torch.Tensor, params: Sequence[torch.Tensor], compute_dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """The five parameter gradients from the per-bin sums, in float64, then each param's dtype.

    Args:
        s0, s1: ``(P, N + 2)`` float64: per unit and bin, ``sum(g)`` and ``sum(g * w)``.
        params: the canonical parameters (their values are used rounded to ``compute_dtype``,
            as the kernels use them).
        compute_dtype: float32 or float64.

    Inside interval ``i`` (bin ``1 + i``) ``f = Y_i + u (Y_{i+1} - Y_i)`` with
    ``u = p - i``, ``p = (x - B_L) N / (B_R - B_L)``, ``t = p / N``, ``K_i = (Y_{i+1} - Y_i) N /
    (B_R - B_L)``: ``df/dY_i = 1 - u``, ``df/dY_{i+1} = u``, ``df/dB_L = -K_i (1 - t)``,
    ``df/dB_R = -K_i t``. Summed over the bin, ``sum(g t) = (i S0_i + S1_i) / N``. The outer
    pieces give ``df/dY_0 = 1``, ``df/dB_L = -K_L``, ``df/dK_L = x - B_L`` (left) and
    ``df/dY_N = 1``, ``df/dB_R = -K_R``, ``df/dK_R = x - B_R`` (right).
    """
    bl, br, heights, kl, kr = (p.to(compute_dtype).to(torch.float64) for p in params)
    n = heights.shape[1] - 1
    s0_left, s0_in, s0_right = s0[:, 0], s0[:, 1:-1], s0[:, -1]
    s1_left, s1_in, s1_right = s1[:, 0], s1[:, 1:-1], s1[:, -1]

    g_heights = torch.zeros_like(heights)
    g_heights[:, :-1] += s0_in - s1_in
    g_heights[:, 1:] += s1_in
    g_heights[:, 0] += s0_left
    g_heights[:, -1] += s0_right

    k_in = (heights[:, 1:] - heights[:, :-1]) * (n / (br - bl))[:, None]
    interval = torch.arange(n, dtype=torch.float64, device=s0.device)
    sum_gt = (interval * s0_in + s1_in) / n  # sum of g * t per interval
    g_left_bound = -kl * s0_left - (k_in * (s0_in - sum_gt)).sum(dim=1)
    g_right_bound = -kr * s0_right - (k_in * sum_gt).sum(dim=1)
    grads = (g_left_bound, g_right_bound, g_heights, s1_left, s1_right)
    # copy=True: s1_left and s1_right are views of one tensor; outputs must not alias.
    return tuple(g.to(p.dtype, copy=True) for g, p in zip(grads, params, strict=True))


@dataclasses.dataclass(frozen=True)
class _BackwardTiling:
    block_r: int
    block_c: int
    block_i: int
    r_blocks_per_program: int
    n_r_programs: int
    n_i_blocks: int
    n_c_blocks: int

    @property
    def grid(self) -> int:
        return self.n_r_programs * self.n_i_blocks * self.n_c_blocks

    @property
    def partial_rows(self) -> int:
        return self.n_r_programs * self.n_i_blocks

    def max_offset(self, channels: int, inner: int) -> int:
        """Largest element offset the kernel computes, masked lanes included."""
        rows = self.n_r_programs * self.r_blocks_per_program * self.block_r
        return (
            rows * channels * inner
            + self.n_c_blocks * self.block_c * inner
            + (self.n_i_blocks * self.block_i)
        )


def _backward_tiling(outer: int, channels: int, inner: int) -> _BackwardTiling:
    """Tile shape ``[BLOCK_R, BLOCK_C, BLOCK_I]`` of about ``_BACKWARD_TILE`` elements.

    The tile takes the unit-stride ``inner`` axis first (coalesced loads), then channels, then
    rows: NCHW gives ``[1, 1, 1024]`` for large H*W and ``[2, 8, 64]`` for 7x7,
    channels_last ``[128, 8, 1]``.
    """
    block_i = min(_next_pow2(inner), _BACKWARD_TILE)
    block_c = min(_next_pow2(channels), max(_BACKWARD_TILE // block_i, 1), _MAX_BLOCK_C)
    block_r = min(max(_BACKWARD_TILE // (block_i * block_c), 1), _next_pow2(outer))
    n_r_blocks = _cdiv(outer, block_r)
    n_i_blocks = _cdiv(inner, block_i)
    n_c_blocks = _cdiv(channels, block_c)
    tiles = n_r_blocks * n_i_blocks * n_c_blocks
    per_program = min(max(_cdiv(tiles, _BACKWARD_MAX_PROGRAMS), 1), n_r_blocks)
    return _BackwardTiling(
        block_r,
        block_c,
        block_i,
        per_program,
        _cdiv(n_r_blocks, per_program),
        n_i_blocks,
        n_c_blocks,
    )


# --------------------------------------------------------------------------------------------
# Kernels and ops (only when triton imports)
# --------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _locate(x, left_bound, right_bound, scale, num_intervals):
        """Bin of each element (0 left, 1 + i interval i, N + 1 right) and its local coordinate.

        Same rules and order of operations as the reference: left if x < B_L, right if
        x >= B_R, else i = clamp(floor(p), 0, N - 1) with p = (x - B_L) * scale (NaN -> 0).
        """
        position = (x - left_bound) * scale
        index = tl.floor(position)
        # NaN x: interval 0 (u stays NaN). Explicit: tl.maximum's NaN handling with the default
        # PropagateNan.NONE happens to drop NaN too, but that is not the documented contract.
        index = tl.where(index != index, 0.0, index)
        # Clamp before the int conversion: outer elements may have |p| = inf or huge.
        index = tl.minimum(tl.maximum(index, 0.0), num_intervals - 1.0)
        is_left = x < left_bound
        is_right = x >= right_bound
        bin_ = tl.where(is_left, 0, tl.where(is_right, num_intervals + 1, index.to(tl.int32) + 1))
        w = tl.where(is_left, x - left_bound, tl.where(is_right, x - right_bound, position - index))
        return bin_, w

    @triton.jit
    def _pwlu_forward_kernel(
        x_ptr,
        y_ptr,
        unit_ptr,  # (P, 3): B_L, B_R, N / (B_R - B_L)
        base_ptr,  # (P, N + 2)
        slope_ptr,  # (P, N + 2)
        numel,
        inner,  # x.stride(channel_dim): channel of memory offset o is (o // inner) % channels
        channels,
        num_intervals,
        BLOCK: tl.constexpr,
        CHANNELWISE: tl.constexpr,
        INDEX_64: tl.constexpr,
    ):
        """y = f(x) over ``numel`` elements in memory order, one block per program."""
        pid = tl.program_id(0)
        if INDEX_64:
            pid = pid.to(tl.int64)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        if CHANNELWISE:  # gather each element's unit parameters
            unit = (offs // inner) % channels
            left_bound = tl.load(unit_ptr + 3 * unit, mask=mask, other=0.0)
            right_bound = tl.load(unit_ptr + 3 * unit + 1, mask=mask, other=1.0)
            scale = tl.load(unit_ptr + 3 * unit + 2, mask=mask, other=1.0)
        else:  # layer-wise: three scalar loads, no integer division
            unit = 0
            left_bound = tl.load(unit_ptr)
            right_bound = tl.load(unit_ptr + 1)
            scale = tl.load(unit_ptr + 2)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(left_bound.dtype)
        bin_, w = _locate(x, left_bound, right_bound, scale, num_intervals)
        entry = unit * (num_intervals + 2) + bin_
        base = tl.load(base_ptr + entry, mask=mask, other=0.0)
        slope = tl.load(slope_ptr + entry, mask=mask, other=0.0)
        y = base + w * slope
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _pwlu_backward_kernel(
        x_ptr,
        g_ptr,  # upstream gradient, same strides as x
        gx_ptr,
        unit_ptr,  # (P, 3): B_L, B_R, N / (B_R - B_L)
        dfdx_ptr,  # (P, N + 2): slope in x of each bin
        sums_ptr,  # (2, partial_rows, P, N + 2): per-program S0 and S1
        outer,
        channels,
        inner,
        num_intervals,
        partial_rows,
        n_i_blocks,
        n_c_blocks,
        r_blocks_per_program,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_I: tl.constexpr,
        NB_PAD: tl.constexpr,  # next power of two >= N + 2
        INDEX_64: tl.constexpr,
    ):
        """grad_x, and per-program sums S0 = sum(g), S1 = sum(g * w) per channel and bin.

        Memory is an (outer, channels, inner) array; a program owns BLOCK_C channels and
        BLOCK_I inner positions and walks ``r_blocks_per_program`` blocks of BLOCK_R rows.
        Per step it reduces the tile bin by bin (masked sums over rows and inner positions,
        never a one-hot [tile x bins] block) into two [BLOCK_C, NB_PAD] accumulators, and
        writes them once at the end: no atomics, and a deterministic result.

        With ``INDEX_64`` every offset into x, g, grad_x and the sums is computed in int64:
        the program id, and so every block index derived from it, is widened first, and so is
        each scalar factor (``channels``, ``partial_rows``) before it is multiplied.
        """
        pid = tl.program_id(0)
        if INDEX_64:  # before any multiply: chan * inner alone can pass 2^31 in NCHW
            pid = pid.to(tl.int64)
            row_stride = tl.cast(channels, tl.int64) * inner
            plane = tl.cast(partial_rows, tl.int64) * channels * (num_intervals + 2)
        else:
            row_stride = channels * inner
            plane = partial_rows * channels * (num_intervals + 2)
        c_block = pid % n_c_blocks
        rest = pid // n_c_blocks
        i_block = rest % n_i_blocks
        r_program = rest // n_i_blocks

        chan = c_block * BLOCK_C + tl.arange(0, BLOCK_C)[None, :, None]
        pos = i_block * BLOCK_I + tl.arange(0, BLOCK_I)[None, None, :]
        chan_mask = chan < channels
        col_mask = chan_mask & (pos < inner)
        col_offs = chan * inner + pos

        left_bound = tl.load(unit_ptr + 3 * chan, mask=chan_mask, other=0.0)
        right_bound = tl.load(unit_ptr + 3 * chan + 1, mask=chan_mask, other=1.0)
        scale = tl.load(unit_ptr + 3 * chan + 2, mask=chan_mask, other=1.0)
        num_bins = num_intervals + 2

        bin_ids = tl.arange(0, NB_PAD)[None, :]
        acc_g = tl.zeros([BLOCK_C, NB_PAD], dtype=unit_ptr.dtype.element_ty)
        acc_gw = tl.zeros([BLOCK_C, NB_PAD], dtype=unit_ptr.dtype.element_ty)
        # The row index advances by additions only (no i32 step * BLOCK_R product).
        row = r_program * r_blocks_per_program * BLOCK_R + tl.arange(0, BLOCK_R)[:, None, None]
        for _ in range(r_blocks_per_program):
            mask = col_mask & (row < outer)
            offs = row * row_stride + col_offs
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(left_bound.dtype)
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(left_bound.dtype)
            bin_, w = _locate(x, left_bound, right_bound, scale, num_intervals)
            dfdx = tl.load(dfdx_ptr + chan * num_bins + bin_, mask=mask, other=0.0)
            tl.store(gx_ptr + offs, (g * dfdx).to(gx_ptr.dtype.element_ty), mask=mask)

            gw = g * w
            bin_ = tl.where(mask, bin_, -1)  # masked lanes join no bin
            # Visit only the bins present in this tile (often far fewer than N + 2).
            lowest = tl.min(tl.where(mask, bin_, NB_PAD))
            highest = tl.max(bin_)
            for b in range(lowest, highest + 1):
                in_bin = bin_ == b
                s_g = tl.sum(tl.sum(tl.where(in_bin, g, 0.0), axis=2), axis=0)  # [BLOCK_C]
                s_gw = tl.sum(tl.sum(tl.where(in_bin, gw, 0.0), axis=2), axis=0)
                hit = bin_ids == b
                acc_g += tl.where(hit, s_g[:, None], 0.0)
                acc_gw += tl.where(hit, s_gw[:, None], 0.0)
            row += BLOCK_R

        # sums[k, r_program * n_i_blocks + i_block, chan, bin]
        out_row = r_program * n_i_blocks + i_block
        out_chan = c_block * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
        out_offs = (out_row * channels + out_chan) * num_bins + bin_ids
        out_mask = (out_chan < channels) & (bin_ids < num_bins)
        tl.store(sums_ptr + out_offs, acc_g, mask=out_mask)
        tl.store(sums_ptr + plane + out_offs, acc_gw, mask=out_mask)

    @torch.library.triton_op(
        "pwlu_det::pwlu_triton_forward",
        mutates_args=(),
        schema=(
            "(Tensor x, Tensor left_bound, Tensor right_bound, Tensor heights, "
            "Tensor left_slope, Tensor right_slope, int channel_dim) -> Tensor"
        ),
    )
    def _pwlu_triton_forward(
        x: torch.Tensor,
        left_bound: torch.Tensor,
        right_bound: torch.Tensor,
        heights: torch.Tensor,
        left_slope: torch.Tensor,
        right_slope: torch.Tensor,
        channel_dim: int,
    ) -> torch.Tensor:
        params = (left_bound, right_bound, heights, left_slope, right_slope)
        units, num_intervals = _check_params(x, params, channel_dim)
        x = _as_dense(x)
        y = torch.empty_like(x)  # keeps x's (dense) strides
        numel = x.numel()
        if numel == 0:
            return y
        unit, base, slope, _ = _unit_tables(params, _compute_dtype(x))
        _, channels, inner = _memory_view(x, units, channel_dim)
        grid = (_cdiv(numel, _FORWARD_BLOCK),)
        with _device_guard(x):  # x's GPU and its current stream, not the current device's
            _traceable(_pwlu_forward_kernel)[grid](
                x,
                y,
                unit,
                base,
                slope,
                numel,
                inner,
                channels,
                num_intervals,
                BLOCK=_FORWARD_BLOCK,
                CHANNELWISE=channels > 1,
                INDEX_64=_needs_int64(grid[0] * _FORWARD_BLOCK),
                num_warps=_NUM_WARPS,
            )
        return y

    @torch.library.triton_op(
        "pwlu_det::pwlu_triton_backward",
        mutates_args=(),
        schema=(
            "(Tensor grad_y, Tensor x, Tensor left_bound, Tensor right_bound, Tensor heights, "
            "Tensor left_slope, Tensor right_slope, int channel_dim) -> (Tensor grad_x, "
            "Tensor g_left_bound, Tensor g_right_bound, Tensor g_heights, Tensor g_left_slope, "
            "Tensor g_right_slope)"
        ),
    )
    def _pwlu_triton_backward(
        grad_y: torch.Tensor,
        x: torch.Tensor,
        left_bound: torch.Tensor,
        right_bound: torch.Tensor,
        heights: torch.Tensor,
        left_slope: torch.Tensor,
        right_slope: torch.Tensor,
        channel_dim: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        params = (left_bound, right_bound, heights, left_slope, right_slope)
        units, num_intervals = _check_params(x, params, channel_dim)
        if tuple(grad_y.shape) != tuple(x.shape):
            raise ValueError(
                f"pwlu_triton: grad_y {tuple(grad_y.shape)} does not match x {tuple(x.shape)}"
            )
        x = _as_dense(x)
        if grad_y.stride() != x.stride() or grad_y.dtype != x.dtype:
            grad_y = torch.empty_like(x).copy_(grad_y)  # same strides as x, element by element
        grad_x = torch.empty_like(x)
        if x.numel() == 0:
            return (grad_x, *(torch.zeros_like(p) for p in params))

        compute_dtype = _compute_dtype(x)
        unit, _, _, dfdx = _unit_tables(params, compute_dtype)
        outer, channels, inner = _memory_view(x, units, channel_dim)
        tiling = _backward_tiling(outer, channels, inner)
        num_bins = num_intervals + 2
        sums = torch.empty(
            (2, tiling.partial_rows, units, num_bins), dtype=compute_dtype, device=x.device
        )
        index_64 = _needs_int64(tiling.max_offset(channels, inner), sums.numel())
        with _device_guard(x):  # x's GPU and its current stream, not the current device's
            _traceable(_pwlu_backward_kernel)[(tiling.grid,)](
                x,
                grad_y,
                grad_x,
                unit,
                dfdx,
                sums,
                outer,
                channels,
                inner,
                num_intervals,
                tiling.partial_rows,
                tiling.n_i_blocks,
                tiling.n_c_blocks,
                tiling.r_blocks_per_program,
                BLOCK_R=tiling.block_r,
                BLOCK_C=tiling.block_c,
                BLOCK_I=tiling.block_i,
                NB_PAD=_next_pow2(num_bins),
                INDEX_64=index_64,
                num_warps=_NUM_WARPS,
            )
        s0, s1 = sums.sum(dim=1, dtype=torch.float64).unbind(0)
        return (grad_x, *_parameter_gradients(s0, s1, params, compute_dtype))

    def _setup_context(ctx, inputs, output) -> None:
        *tensors, channel_dim = inputs
        ctx.save_for_backward(*tensors)  # x and the five parameters, nothing else
        ctx.channel_dim = channel_dim

    def _backward(ctx, grad_y):
        grads = torch.ops.pwlu_det.pwlu_triton_backward(grad_y, *ctx.saved_tensors, ctx.channel_dim)
        return (*grads, None)

    torch.library.register_autograd(
        "pwlu_det::pwlu_triton_forward", _backward, setup_context=_setup_context
    )


# --------------------------------------------------------------------------------------------
# Ahead-of-time compilation for real GPUs (no GPU needed)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelBuild:
    """One kernel variant compiled for one GPU architecture.

    Attributes:
        kernel: the Triton kernel's name.
        variant: which specialization (constexpr values) was compiled.
        arch: the compute capability, e.g. 80 for sm_80.
        cubin_bytes: size of the cubin.
        registers: registers per thread, from ``ptxas -v`` (None if not reported).
        spill_stores, spill_loads: bytes spilled to local memory per thread (None if unknown).
        shared_bytes: static shared memory (scratch for reductions) from the kernel metadata.
        ptxas: the ptxas that built it, ``"<path> (release <version>)"``.
    """

    kernel: str
    variant: str
    arch: int
    cubin_bytes: int
    registers: int | None
    spill_stores: int | None
    spill_loads: int | None
    shared_bytes: int
    ptxas: str


@dataclasses.dataclass(frozen=True)
class _AotVariant:
    kernel: object
    name: str
    signature: dict[str, str]
    constexprs: dict[str, object]
    attrs: dict[tuple[int, ...], list[list[object]]]


def _specialize(kernel, name: str, dtypes: dict[str, str], args: dict[str, object]) -> _AotVariant:
    """Signature, constexprs and attributes as Triton's JIT would specialize a launch.

    Args:
        kernel: the JIT function.
        name: the variant's label.
        dtypes: the pointer arguments' element types, e.g. ``{"x_ptr": "fp32"}``.
        args: sample values of the integer and constexpr arguments.

    The JIT turns an integer argument equal to 1 into a constant and marks integers divisible
    by 16 (and 16-byte aligned pointers: fresh torch allocations are) with
    ``tt.divisibility = 16``; the same here, so that the cubin is the one a GPU would run.
    """
    signature, constexprs, attrs = {}, {}, {}
    for index, arg in enumerate(kernel.arg_names):
        if arg in dtypes:
            signature[arg] = "*" + dtypes[arg]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif arg.isupper() or args[arg] == 1:  # a tl.constexpr, or an int specialized as one
            signature[arg] = "constexpr"
            constexprs[arg] = args[arg]
        else:  # the JIT passes ints that do not fit in int32 as int64
            signature[arg] = "i32" if -(2**31) <= args[arg] <= _INT32_MAX else "i64"
            if args[arg] % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    return _AotVariant(kernel, name, signature, constexprs, attrs)


_TABLE_DTYPES = {"unit_ptr": "fp32", "base_ptr": "fp32", "slope_ptr": "fp32"}
_BACKWARD_DTYPES = {
    k: "fp32" for k in ("x_ptr", "g_ptr", "gx_ptr", "unit_ptr", "dfdx_ptr", "sums_ptr")
}


def _forward_variant(
    name: str, dtype: str, numel: int, channels: int, inner: int, index_64: bool
) -> _AotVariant:
    """The forward kernel for ``numel`` elements of ``dtype`` (N=16), as the op launches it."""
    args = {
        "numel": numel,
        "inner": inner,
        "channels": channels,
        "num_intervals": 16,
        "BLOCK": _FORWARD_BLOCK,
        "CHANNELWISE": channels > 1,
        "INDEX_64": index_64,
    }
    dtypes = {"x_ptr": dtype, "y_ptr": dtype, **_TABLE_DTYPES}
    return _specialize(_pwlu_forward_kernel, name, dtypes, args)


def _backward_variant(
    name: str, outer: int, channels: int, inner: int, num_intervals: int, index_64: bool
) -> _AotVariant:
    """The float32 backward kernel for the view (outer, channels, inner), with its tiling."""
    tiling = _backward_tiling(outer, channels, inner)
    args = {
        "outer": outer,
        "channels": channels,
        "inner": inner,
        "num_intervals": num_intervals,
        "partial_rows": tiling.partial_rows,
        "n_i_blocks": tiling.n_i_blocks,
        "n_c_blocks": tiling.n_c_blocks,
        "r_blocks_per_program": tiling.r_blocks_per_program,
        "BLOCK_R": tiling.block_r,
        "BLOCK_C": tiling.block_c,
        "BLOCK_I": tiling.block_i,
        "NB_PAD": _next_pow2(num_intervals + 2),
        "INDEX_64": index_64,
    }
    return _specialize(_pwlu_backward_kernel, name, _BACKWARD_DTYPES, args)


def _aot_variants() -> list[_AotVariant]:
    """The kernel specializations worth building, for typical detection-backbone shapes."""
    variants = []
    for name, dtype, (channels, inner) in (
        ("fp32 layer-wise", "fp32", (1, 1)),
        ("fp32 NCHW channel-wise C=256 HxW=64x64", "fp32", (256, 4096)),
        ("fp32 channels_last channel-wise C=256", "fp32", (256, 1)),
        ("fp16 NCHW channel-wise C=256 HxW=64x64", "fp16", (256, 4096)),
        ("bf16 channels_last channel-wise C=256", "bf16", (256, 1)),
    ):
        variants.append(_forward_variant(name, dtype, 2 * 256 * 4096, channels, inner, False))

    for layout, (outer, channels, inner) in (
        ("layer-wise", (2 * 256 * 4096, 1, 1)),
        ("NCHW C=256 HxW=64x64", (2, 256, 4096)),
        ("NCHW C=256 HxW=7x7", (2, 256, 49)),
        ("channels_last C=256", (2 * 4096, 256, 1)),
    ):
        tiling = _backward_tiling(outer, channels, inner)
        tile = f"[{tiling.block_r},{tiling.block_c},{tiling.block_i}]"
        for n in (16, 64):
            name = f"fp32 {layout} N={n} tile={tile}"
            variants.append(_backward_variant(name, outer, channels, inner, n, False))
    return variants


def _ptxas_usage(ptx: str, arch: int) -> tuple[int | None, int | None, int | None]:
    """Registers and spill bytes of a PTX module, from ``ptxas -v`` (Triton's own ptxas).

    Triton runs ptxas with ``-v`` but drops the log; running it again on the same PTX with the
    same register-allocation flag gives the numbers (n_regs / n_spills on a CompiledKernel come
    only from loading it on a GPU).
    """
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [
            get_ptxas(arch).path,
            "-v",
            "--regAllocOptLevel=2",
            f"--gpu-name={sm_arch_from_capability(arch)}",
            src,
            "-o",
            os.path.join(tmp, "kernel.cubin"),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        logger.warning("ptxas -v failed (%d): %s", result.returncode, log.strip())
        return None, None, None
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return (
        int(regs.group(1)) if regs else None,
        int(spills.group(1)) if spills else None,
        int(spills.group(2)) if spills else None,
    )


def _require_compilable(caller: str) -> None:
    if not available():
        raise RuntimeError(f"{caller}: {unavailable_reason()}")
    if _interpreting() or not isinstance(_pwlu_forward_kernel, triton.runtime.jit.JITFunction):
        raise RuntimeError(
            f"{caller}: unset TRITON_INTERPRET (the kernels were "
            "created for Triton's interpreter and cannot be compiled)"
        )


def _compile(variant: _AotVariant, arch: int):
    """``triton.compile`` one variant for ``sm_<arch>``; the compiled kernel (``.asm``)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    target = GPUTarget("cuda", arch, 32)
    options = make_backend(target).parse_options({"num_warps": _NUM_WARPS})
    src = ASTSource(
        fn=variant.kernel,
        signature=variant.signature,
        constexprs=variant.constexprs,
        attrs=variant.attrs,
    )
    return triton.compile(src, target=target, options=options.__dict__)


def compile_for_targets(archs: Sequence[int] = (80, 90)) -> list[KernelBuild]:
    """Compile every kernel variant to cubin for each CUDA architecture, without a GPU.

    Uses ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` and Triton's
    bundled ptxas.

    Args:
        archs: compute capabilities, e.g. ``(80, 90)`` for A100 and H100.

    Returns:
        One :class:`KernelBuild` per variant and architecture.

    Raises:
        RuntimeError: Triton is missing, or ``TRITON_INTERPRET=1`` is set (the kernels are then
            interpreter functions, which cannot be compiled).
        triton.CompilationError / PTXASError: a kernel fails to compile.
    """
    _require_compilable("compile_for_targets")
    from triton.backends.nvidia.compiler import get_ptxas

    builds = []
    for arch in archs:
        tool = get_ptxas(arch)  # bundled with Triton unless TRITON_PTXAS_PATH says otherwise
        for variant in _aot_variants():
            kernel = variant.kernel
            compiled = _compile(variant, arch)
            cubin = compiled.asm["cubin"]
            regs, spill_stores, spill_loads = _ptxas_usage(compiled.asm["ptx"], arch)
            builds.append(
                KernelBuild(
                    kernel=kernel.__name__,
                    variant=variant.name,
                    arch=arch,
                    cubin_bytes=len(cubin),
                    registers=regs,
                    spill_stores=spill_stores,
                    spill_loads=spill_loads,
                    shared_bytes=int(compiled.metadata.shared),
                    ptxas=f"{tool.path} (release {tool.version})",
                )
            )
            logger.info(
                "compiled %s [%s] for sm_%d: %d bytes cubin, %s registers",
                kernel.__name__,
                variant.name,
                arch,
                len(cubin),
                regs,
            )
    return builds


# --------------------------------------------------------------------------------------------
# 64-bit offsets, checked in the Triton IR (no GPU needed)
# --------------------------------------------------------------------------------------------

_VALUE = r"%[\w$.\-]+"
_I32_MULI = re.compile(r"\barith\.muli\b.*:\s*(?:i32|tensor<[^>]*xi32>)(?:\s|$)")
_FOR = re.compile(
    rf"scf\.for\s+({_VALUE})\s*=\s*({_VALUE})\s+to\s+({_VALUE})\s+step\s+({_VALUE})"
    r"(?:\s+iter_args\(([^)]*)\))?"
)


@dataclasses.dataclass(frozen=True)
class OffsetCheck:
    """What :func:`check_int64_offsets` found in one kernel variant's TTIR.

    Attributes:
        kernel: the Triton kernel's name.
        variant: which specialization (all with ``INDEX_64=True``).
        offsets_checked: ``tt.addptr`` ops on the large tensors' pointers (x, y, g, grad_x and
            the partial sums) whose offset was traced back.
        i32_offsets: those whose offset itself is 32-bit (TTIR lines).
        i32_multiplies: ``arith.muli`` in i32 that feed one of those offsets (TTIR lines).
    """

    kernel: str
    variant: str
    offsets_checked: int
    i32_offsets: tuple[str, ...]
    i32_multiplies: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every checked offset is 64-bit and no i32 product feeds one."""
        return self.offsets_checked > 0 and not self.i32_offsets and not self.i32_multiplies


def i32_offset_multiplies(
    ttir: str, pointer_args: Sequence[str]
) -> tuple[int, list[str], list[str]]:
    """Trace the offsets of pointer arithmetic on ``pointer_args`` back through a TTIR module.

    A def-use walk over the SSA values: every ``tt.addptr`` whose base derives from one of the
    named kernel arguments has its offset operand followed back through all the values it is
    computed from, loop-carried values of ``scf.for`` included (an ``iter_args`` value depends
    on its initial value and on the matching ``scf.yield`` operand).

    Args:
        ttir: the module text (``compiled.asm["ttir"]``).
        pointer_args: kernel argument names, e.g. ``("x_ptr", "y_ptr")``.

    Returns:
        ``(offsets_checked, i32_offsets, i32_multiplies)``: the number of such ``tt.addptr``
        ops, the ones with a 32-bit offset, and the i32 ``arith.muli`` lines upstream of any
        offset (an i32 product that is sign-extended afterwards has already overflowed).
    """
    deps: dict[str, set[str]] = {}
    i32_muls: dict[str, str] = {}
    addptrs: list[tuple[str, str, str]] = []  # base, offset, line
    frames: list[tuple[list[str], str | None]] = []  # (iter_args, loop result) per region

    def depend(name: str, on: Sequence[str]) -> None:
        deps.setdefault(name, set()).update(on)

    for raw in ttir.splitlines():
        line = raw.strip()
        if line.startswith("}"):
            frame = frames.pop() if frames else ([], None)
            if line.endswith("{"):  # `} else {`: the same region op continues
                frames.append(frame)
            continue
        result = re.match(rf"({_VALUE})(?::\d+)?\s*=\s*(.*)", line)
        body = result.group(2) if result else line
        operands = re.findall(_VALUE, body)
        loop = _FOR.search(body)
        if loop:
            iv, *bounds = loop.group(1, 2, 3, 4)
            depend(iv, bounds)
            carried = []
            for pair in (loop.group(5) or "").split(","):
                if "=" in pair:
                    arg, init = (v.strip() for v in pair.split("=", 1))
                    depend(arg, [init])
                    carried.append(arg)
            if result:
                depend(result.group(1), [v for v in operands if v not in carried and v != iv])
            frames.append((carried, result.group(1) if result else None))
            continue
        if line.startswith("scf.yield") and frames:
            carried, loop_result = frames[-1]
            for arg, value in zip(carried, operands, strict=False):
                depend(arg, [value])
            if loop_result:
                depend(loop_result, operands)
            continue
        if result:
            name = result.group(1)
            depend(name, operands)
            if _I32_MULI.search(body):
                i32_muls[name] = line
            if body.startswith("tt.addptr") and len(operands) >= 2:
                addptrs.append((operands[0], operands[1], line))
        if line.endswith("{"):
            frames.append(([], result.group(1) if result else None))

    def upstream(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            value = todo.pop()
            if value not in seen:
                seen.add(value)
                todo.extend(deps.get(value, ()))
        return seen

    roots = {"%" + a for a in pointer_args}
    checked, i32_offsets, multiplies = 0, [], {}
    for base, offset, line in addptrs:
        if not upstream(base) & roots:
            continue
        checked += 1
        offset_type = line.rsplit(":", 1)[-1]
        if not re.search(r"\bi64\b|xi64>", offset_type):
            i32_offsets.append(line)
        for value in upstream(offset):
            if value in i32_muls:
                multiplies[value] = i32_muls[value]
    return checked, i32_offsets, sorted(multiplies.values())


def _int64_variants() -> list[tuple[_AotVariant, tuple[str, ...]]]:
    """``INDEX_64`` specializations for tensors past 2^31 elements, with their large pointers.

    The integer arguments are the ones such launches pass: each below 2^31 (so i32) except
    where the element count itself is larger (then i64, as the JIT passes it).
    """
    variants = []
    big = 2**31 + 2**20
    for name, dtype, (numel, channels, inner) in (
        ("NCHW channel-wise, one sample of 4 x 2^29", "fp32", (2**31, 4, 2**29)),
        ("channels_last channel-wise C=256", "bf16", (big, 256, 1)),
        ("layer-wise", "fp16", (big, 1, 1)),
    ):
        variant = _forward_variant(f"{dtype} {name}", dtype, numel, channels, inner, True)
        variants.append((variant, ("x_ptr", "y_ptr")))

    for name, (outer, channels, inner) in (
        ("NCHW, one sample of 4 x 2^29", (1, 4, 2**29)),
        ("NCHW (2, 256, 2048, 2048)", (2, 256, 2**22)),
        ("channels_last C=256", (big // 256, 256, 1)),
        ("layer-wise", (big, 1, 1)),
    ):
        variant = _backward_variant(f"fp32 {name}", outer, channels, inner, 16, True)
        variants.append((variant, ("x_ptr", "g_ptr", "gx_ptr", "sums_ptr")))
    return variants


def check_int64_offsets(arch: int = 90) -> list[OffsetCheck]:
    """Build the ``INDEX_64`` kernel variants' TTIR and check that their offsets are 64-bit.

    An offset past 2^31 elements must be computed in int64 from the start: an i32 product
    (``chan * inner``, ``channels * inner``) that is widened afterwards has already wrapped
    around, and the kernel reads and writes gigabytes away from its tensors. No GPU is needed.

    Args:
        arch: the compute capability to compile for.

    Returns:
        One :class:`OffsetCheck` per variant (see :attr:`OffsetCheck.ok`).

    Raises:
        RuntimeError: Triton is missing, or ``TRITON_INTERPRET=1`` is set.
    """
    _require_compilable("check_int64_offsets")
    checks = []
    for variant, pointers in _int64_variants():
        ttir = _compile(variant, arch).asm["ttir"]
        checked, i32_offsets, multiplies = i32_offset_multiplies(ttir, pointers)
        checks.append(
            OffsetCheck(
                kernel=variant.kernel.__name__,
                variant=variant.name,
                offsets_checked=checked,
                i32_offsets=tuple(i32_offsets),
                i32_multiplies=tuple(multiplies),
            )
        )
    return checks

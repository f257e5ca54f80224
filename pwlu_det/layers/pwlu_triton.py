"""The CUDA kernels of the PWLU op, host side: tiling, launches, and nothing else.

:mod:`.pwlu_op` registers :func:`forward` and :func:`backward` as the CUDA kernels of
``pwlu_det::pwlu_forward`` / ``pwlu_det::pwlu_backward`` (and, under Triton's interpreter,
``TRITON_INTERPRET=1``, as their CPU kernels: the CPU twins the tests run). The Triton kernels
themselves are in :mod:`.pwlu_triton_kernels`; ahead-of-time builds (cubin, registers, the 64-bit
offset check) are ``tools/compile_triton_kernels.py``.

Per call: the forward is one launch; the backward is the main kernel (grad_x and per-program
partial sums) and one finalize kernel (all five parameter gradients). Besides allocations the
host issues no ATen op, except to copy a non-dense input (or a grad_y with other strides) into a
dense one. No launch reads a value back to the host.

Memory layout. A dense, non-overlapping tensor (contiguous, channels_last, any permutation) is
walked in memory order as an ``(outer, C, inner)`` array with ``inner = x.stride(channel_dim)``
(:func:`memory_view`); other tensors (non-dense views) are made contiguous first.

Launches run with ``x``'s GPU current (so on its current stream, not device 0's) and switch to
64-bit offsets (``INDEX_64``) when one could pass 2^31 elements.

Versions: torch >= 2.11 and Triton >= 3.6.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import torch

__all__ = ["available", "backward", "forward", "memory_view", "unavailable_reason"]

try:
    import triton

    from . import pwlu_triton_kernels as kernels
except Exception as e:  # ImportError, or a triton that fails while importing
    triton = None
    kernels = None
    _IMPORT_ERROR: str | None = f"triton could not be imported: {type(e).__name__}: {e}"
else:
    _IMPORT_ERROR = None

# Elements per forward program, and per warp-tile of the backward (32 lanes x 4 elements).
_FORWARD_TILE = 1024
_WARP_TILE = 128
# 8 warps; the backward handles one warp-tile per warp and step (_GROUPS = _NUM_WARPS).
_NUM_WARPS = 8
_GROUPS = _NUM_WARPS
# The backward's per-warp accumulators hold BLOCK_C * next_pow2(N + 2) values per warp each;
# BLOCK_C <= _ACC_VALUES / next_pow2(N + 2) keeps that at a few registers per thread.
_ACC_VALUES = 128
# Backward grid: about this many programs per SM, and each program at least this many steps.
_PROGRAMS_PER_SM = 4
_MIN_STEPS = 2
# Stands in for the SM count where there is none (the interpreter's CPU tensors).
_INTERPRETER_SMS = 2
# The finalize kernel: about this many (unit, bin) values per program, on 4 warps.
_FINALIZE_VALUES = 256
_FINALIZE_WARPS = 4
_INT32_MAX = 2**31 - 1


def available() -> bool:
    """True when Triton can be imported (the kernels still need CUDA or ``TRITON_INTERPRET=1``)."""
    return _IMPORT_ERROR is None


def unavailable_reason() -> str:
    """Why :func:`available` is False (empty when it is True)."""
    return _IMPORT_ERROR or ""


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _launch(kernel, grid: tuple[int, ...], *args, **kwargs) -> None:
    """Launch ``kernel`` on ``grid`` (the one place launches go through; tests record them)."""
    kernel[grid](*args, **kwargs)


def _device_guard(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``x``'s GPU the current device around a launch; a no-op otherwise.

    Triton launches on the current device and its current stream. Without the guard, ``x`` on
    ``cuda:1`` while device 0 is current is an illegal address (or, with peer access, a kernel
    on the wrong GPU, unordered with the work that produced ``x``).
    """
    if x.device.type != "cuda":  # the interpreter's CPU tensors
        return contextlib.nullcontext()
    return torch.cuda.device(x.device)


@functools.cache
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return _INTERPRETER_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


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


def _as_dense(x: torch.Tensor) -> torch.Tensor:
    return x if _is_dense(x) else x.contiguous()


def _contiguous(params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(p if p.is_contiguous() else p.contiguous() for p in params)


def memory_view(x: torch.Tensor, units: int, channel_dim: int) -> tuple[int, int, int]:
    """``(outer, channels, inner)``: dense ``x`` in memory order as an (outer, C, inner) array.

    Layer-wise units (``units == 1``) ignore the channel: ``(numel, 1, 1)``.
    """
    if units == 1:
        return x.numel(), 1, 1
    inner = x.stride(channel_dim)
    return x.numel() // (units * inner), units, inner


@dataclasses.dataclass(frozen=True)
class Tile:
    """A ``[block_r, block_c, block_i]`` tile of the (outer, channels, inner) array."""

    block_r: int
    block_c: int
    block_i: int

    @staticmethod
    def fit(outer: int, channels: int, inner: int, size: int, max_c: int) -> Tile:
        """About ``size`` elements: the unit-stride inner axis first (coalesced loads), then
        channels (at most ``max_c``), then rows."""
        block_i = min(_next_pow2(inner), size)
        block_c = min(_next_pow2(channels), max(size // block_i, 1), max_c)
        block_r = min(max(size // (block_i * block_c), 1), _next_pow2(outer))
        return Tile(block_r, block_c, block_i)

    def counts(self, outer: int, channels: int, inner: int) -> tuple[int, int, int]:
        """Tiles along rows, channels and inner positions."""
        return (
            triton.cdiv(outer, self.block_r),
            triton.cdiv(channels, self.block_c),
            triton.cdiv(inner, self.block_i),
        )

    def constexprs(self) -> dict[str, int]:
        return {"BLOCK_R": self.block_r, "BLOCK_C": self.block_c, "BLOCK_I": self.block_i}


@dataclasses.dataclass(frozen=True)
class BackwardGrid:
    """The backward's launch: ``n_c_blocks * n_split`` programs of ``steps`` steps each."""

    tile: Tile
    n_c_blocks: int
    n_split: int
    steps: int

    @property
    def programs(self) -> int:
        return self.n_c_blocks * self.n_split

    def max_offset(self, outer: int, channels: int, inner: int) -> int:
        """Largest element offset the kernel computes, masked lanes and tiles included."""
        n_i = triton.cdiv(inner, self.tile.block_i)
        last_tile = self.steps * self.n_split * _GROUPS
        rows = (last_tile // n_i + 1) * self.tile.block_r
        return _padded_extent(rows, channels, inner, self.tile)


def backward_grid(
    outer: int, channels: int, inner: int, num_bins: int, sm_count: int
) -> BackwardGrid:
    """Warp-tiles, and a grid of about ``_PROGRAMS_PER_SM * sm_count`` programs.

    The grid (and so the partial-sums buffer, ``2 * n_split * P * (N + 2)`` values) is sized to
    the GPU, not to the input, and shrinks for inputs too small to give every program
    ``_MIN_STEPS`` steps.
    """
    tile = Tile.fit(outer, channels, inner, _WARP_TILE, max(_ACC_VALUES // _next_pow2(num_bins), 1))
    n_r, n_c, n_i = tile.counts(outer, channels, inner)
    tiles = n_r * n_i
    target = max(triton.cdiv(_PROGRAMS_PER_SM * sm_count, n_c), 1)
    n_split = max(min(target, triton.cdiv(tiles, _GROUPS * _MIN_STEPS)), 1)
    return BackwardGrid(tile, n_c, n_split, triton.cdiv(tiles, _GROUPS * n_split))


def finalize_units(nb_pad: int) -> int:
    """Units per program of the finalize kernel."""
    return max(_FINALIZE_VALUES // nb_pad, 1)


def _needs_int64(*extents: int) -> bool:
    """True when an offset up to any of ``extents`` (in elements) may not fit in int32."""
    return max(extents) > _INT32_MAX


def _padded_extent(outer: int, channels: int, inner: int, tile: Tile) -> int:
    """Largest element offset a kernel computes, masked lanes included."""
    n_r, n_c, n_i = tile.counts(outer, channels, inner)
    return (
        (n_r * tile.block_r + 1) * channels * inner
        + n_c * tile.block_c * inner
        + n_i * tile.block_i
    )


def _units(heights: torch.Tensor) -> tuple[int, int]:
    return heights.shape[0], heights.shape[1] - 1


def forward(x: torch.Tensor, params: tuple[torch.Tensor, ...], channel_dim: int) -> torch.Tensor:
    """``y = f(x)``: one launch. ``params``: the five canonical parameters, checked by the op
    (``pwlu_det::pwlu_forward``)."""
    params = _contiguous(params)
    units, num_intervals = _units(params[2])
    x = _as_dense(x)
    y = torch.empty_like(x)  # keeps x's (dense) strides
    if x.numel() == 0:
        return y
    outer, channels, inner = memory_view(x, units, channel_dim)
    tile = Tile.fit(outer, channels, inner, _FORWARD_TILE, _FORWARD_TILE)
    grid = (math.prod(tile.counts(outer, channels, inner)),)
    with _device_guard(x):  # x's GPU and its current stream, not the current device's
        _launch(
            kernels._pwlu_forward_kernel,
            grid,
            x,
            y,
            *params,
            outer,
            channels,
            inner,
            num_intervals,
            **tile.constexprs(),
            F64=x.dtype == torch.float64,
            INDEX_64=_needs_int64(_padded_extent(outer, channels, inner, tile)),
            num_warps=_NUM_WARPS,
        )
    return y


def backward(
    grad_y: torch.Tensor, x: torch.Tensor, params: tuple[torch.Tensor, ...], channel_dim: int
) -> tuple[torch.Tensor, ...]:
    """``(grad_x, g_left_bound, g_right_bound, g_heights, g_left_slope, g_right_slope)``: the
    main kernel and the finalize kernel. Arguments as ``pwlu_det::pwlu_backward``."""
    params = _contiguous(params)
    units, num_intervals = _units(params[2])
    x = _as_dense(x)
    if grad_y.stride() != x.stride() or grad_y.dtype != x.dtype:
        grad_y = torch.empty_like(x).copy_(grad_y)  # same strides as x, element by element
    grad_x = torch.empty_like(x)
    if x.numel() == 0:  # nothing to launch
        return (grad_x, *(torch.zeros_like(p) for p in params))
    grads = tuple(torch.empty_like(p) for p in params)
    f64 = x.dtype == torch.float64
    outer, channels, inner = memory_view(x, units, channel_dim)
    num_bins = num_intervals + 2
    launch = backward_grid(outer, channels, inner, num_bins, _sm_count(x.device))
    sums = torch.empty(
        (2, launch.n_split, units, num_bins),
        dtype=torch.float64 if f64 else torch.float32,
        device=x.device,
    )
    nb_pad = _next_pow2(num_bins)
    with _device_guard(x):  # x's GPU and its current stream, not the current device's
        extent = launch.max_offset(outer, channels, inner)
        _launch(
            kernels._pwlu_backward_kernel,
            (launch.programs,),
            x,
            grad_y,
            grad_x,
            *params,
            sums,
            outer,
            channels,
            inner,
            num_intervals,
            launch.n_split,
            launch.steps,
            GROUPS=_GROUPS,
            **launch.tile.constexprs(),
            NB_PAD=nb_pad,
            F64=f64,
            INDEX_64=_needs_int64(extent, sums.numel()),
            num_warps=_NUM_WARPS,
        )
        _launch(
            kernels._pwlu_param_grad_kernel,
            (triton.cdiv(units, finalize_units(nb_pad)),),
            sums,
            *params,
            *grads,
            units,
            num_intervals,
            launch.n_split,
            BLOCK_P=finalize_units(nb_pad),
            NB_PAD=nb_pad,
            F64=f64,
            num_warps=_FINALIZE_WARPS,
        )
    return (grad_x, *grads)

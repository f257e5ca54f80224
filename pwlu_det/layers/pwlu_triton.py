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

__all__ = [
    "KernelLaunch",
    "available",
    "backward",
    "forward",
    "jit_kernels",
    "launch_plan",
    "memory_view",
    "unavailable_reason",
]

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


@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    """One launch of a PWLU kernel, everything but the tensors.

    Attributes:
        kernel: the Triton JIT function.
        grid: the launch grid.
        scalars: the integer arguments, by name, in the kernel's order after its pointers.
        constexprs: the compile-time arguments (tiles, ``F64``, ``INDEX_64``, ...).
        num_warps: warps per program.
    """

    kernel: object
    grid: tuple[int, ...]
    scalars: dict[str, int]
    constexprs: dict[str, object]
    num_warps: int


def jit_kernels() -> tuple:
    """The three Triton kernels: forward, backward main, backward finalize."""
    if kernels is None:
        raise RuntimeError(unavailable_reason())
    return (
        kernels._pwlu_forward_kernel,
        kernels._pwlu_backward_kernel,
        kernels._pwlu_param_grad_kernel,
    )


def launch_plan(
    direction: str,
    outer: int,
    channels: int,
    inner: int,
    num_intervals: int,
    *,
    f64: bool = False,
    sm_count: int | None = None,
) -> tuple[KernelLaunch, ...]:
    """How the op launches its kernels for one input: the single source of the launch
    configuration, used by :func:`forward`, :func:`backward`, ``tools/compile_triton_kernels.py``
    and the benchmarks.

    Args:
        direction: ``"forward"`` (one launch) or ``"backward"`` (the main kernel, then the
            finalize kernel).
        outer, channels, inner: the input's :func:`memory_view`; ``channels`` is the number of
            units (1 for a layer-wise unit).
        num_intervals: N.
        f64: float64 input (the kernels then compute in float64).
        sm_count: the GPU's multiprocessors; the backward's grid is sized to it (required for
            ``"backward"``).

    Returns:
        The launches, in order. The backward's partial-sums buffer has the shape
        ``(2, scalars["n_split"], channels, N + 2)`` (``plan[0].scalars``).
    """
    if direction == "forward":
        tile = Tile.fit(outer, channels, inner, _FORWARD_TILE, _FORWARD_TILE)
        index_64 = _needs_int64(_padded_extent(outer, channels, inner, tile))
        return (
            KernelLaunch(
                kernel=kernels._pwlu_forward_kernel,
                grid=(math.prod(tile.counts(outer, channels, inner)),),
                scalars={
                    "outer": outer,
                    "channels": channels,
                    "inner": inner,
                    "num_intervals": num_intervals,
                },
                constexprs={**tile.constexprs(), "F64": f64, "INDEX_64": index_64},
                num_warps=_NUM_WARPS,
            ),
        )
    if direction != "backward":
        raise ValueError(
            f"launch_plan: direction must be 'forward' or 'backward', got {direction!r}"
        )
    if sm_count is None:
        raise ValueError("launch_plan: the backward needs sm_count")
    num_bins = num_intervals + 2
    nb_pad = _next_pow2(num_bins)
    grid = backward_grid(outer, channels, inner, num_bins, sm_count)
    sums_numel = 2 * grid.n_split * channels * num_bins
    main = KernelLaunch(
        kernel=kernels._pwlu_backward_kernel,
        grid=(grid.programs,),
        scalars={
            "outer": outer,
            "channels": channels,
            "inner": inner,
            "num_intervals": num_intervals,
            "n_split": grid.n_split,
            "steps": grid.steps,
        },
        constexprs={
            "GROUPS": _GROUPS,
            **grid.tile.constexprs(),
            "NB_PAD": nb_pad,
            "F64": f64,
            "INDEX_64": _needs_int64(grid.max_offset(outer, channels, inner), sums_numel),
        },
        num_warps=_NUM_WARPS,
    )
    units_per_program = finalize_units(nb_pad)
    finalize = KernelLaunch(
        kernel=kernels._pwlu_param_grad_kernel,
        grid=(triton.cdiv(channels, units_per_program),),
        scalars={"units": channels, "num_intervals": num_intervals, "n_split": grid.n_split},
        constexprs={"BLOCK_P": units_per_program, "NB_PAD": nb_pad, "F64": f64},
        num_warps=_FINALIZE_WARPS,
    )
    return main, finalize


def _run(plan: KernelLaunch, *tensors: torch.Tensor) -> None:
    """Launch ``plan`` on ``tensors`` (the kernel's pointer arguments, in order)."""
    _launch(
        plan.kernel,
        plan.grid,
        *tensors,
        *plan.scalars.values(),
        **plan.constexprs,
        num_warps=plan.num_warps,
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
    (plan,) = launch_plan(
        "forward", outer, channels, inner, num_intervals, f64=x.dtype == torch.float64
    )
    with _device_guard(x):  # x's GPU and its current stream, not the current device's
        _run(plan, x, y, *params)
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
    main, finalize = launch_plan(
        "backward", outer, channels, inner, num_intervals, f64=f64, sm_count=_sm_count(x.device)
    )
    sums = torch.empty(
        (2, main.scalars["n_split"], units, num_intervals + 2),
        dtype=torch.float64 if f64 else torch.float32,
        device=x.device,
    )
    with _device_guard(x):  # x's GPU and its current stream, not the current device's
        _run(main, x, grad_y, grad_x, *params, sums)
        _run(finalize, sums, *params, *grads)
    return (grad_x, *grads)

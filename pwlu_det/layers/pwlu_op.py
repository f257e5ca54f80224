"""The public PWLU function: input checks and the choice of backend.

Backends (all compute the same function, see :mod:`pwlu_det.layers.pwlu_reference`):

- ``"reference"``: plain PyTorch ops; the oracle, and the path for TorchScript and ONNX export.
- ``"cpp"``: the fused C++ CPU kernel (``torch.ops.pwlu_det.pwlu_forward``).
- ``"triton"``: the Triton kernel for CUDA (``torch.ops.pwlu_det.pwlu_triton_forward``); it
  also accepts CPU tensors when ``TRITON_INTERPRET=1`` is set (Triton's interpreter).

The fused backends take the parameters in a canonical form: ``(P,)`` for the bounds and slopes
and ``(P, N + 1)`` for the heights, with ``P == 1`` for a layer-wise unit and ``P == C`` for a
channel-wise one, and a non-negative ``channel_dim``.
"""

from __future__ import annotations

import logging
import os

import torch

from .pwlu_reference import pwlu_reference

__all__ = ["BACKENDS", "canonical_params", "pwlu", "resolve_backend"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "cpp", "triton")
_PARAM_NAMES = ("left_bound", "right_bound", "heights", "left_slope", "right_slope")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    # Not while torch.compile traces: a logging call there breaks a fullgraph compile, and
    # reading _warned would make the graph depend on it (a recompile once it changes).
    if torch.compiler.is_compiling() or key in _warned:
        return
    _warned.add(key)
    logger.warning(message)


def _exporting() -> bool:
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def triton_interpreting() -> bool:
    """True when Triton's CPU interpreter is on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """The concrete backend that computes ``pwlu`` for ``x``.

    Raises:
        ValueError: unknown backend name.
        RuntimeError: the requested backend cannot run here; the message says why.
    """
    from . import pwlu_cpp

    if backend not in BACKENDS:
        raise ValueError(f"pwlu: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if _exporting():
            return "reference"
        if x.device.type == "cuda":
            from . import pwlu_triton  # imports Triton: only where it is needed

            if pwlu_triton.available():
                return "triton"
            _warn_once(
                "triton",
                f"pwlu: Triton is unavailable ({pwlu_triton.unavailable_reason()})"
                "; using the slow reference backend on CUDA",
            )
            return "reference"
        if x.device.type == "cpu" and pwlu_cpp.available():
            return "cpp"
        _warn_once(
            f"cpp-{x.device.type}",
            f"pwlu: the C++ extension is unavailable ({pwlu_cpp.unavailable_reason()}) for "
            f"{x.device.type} tensors; using the slow reference backend",
        )
        return "reference"
    if backend == "cpp":
        if not pwlu_cpp.available():
            raise RuntimeError(
                f"pwlu: backend 'cpp' is unavailable: {pwlu_cpp.unavailable_reason()}. "
                "Build it with `pip install --no-build-isolation -e .` (or `make setup`)"
            )
        if x.device.type != "cpu":
            raise RuntimeError(f"pwlu: backend 'cpp' runs on CPU tensors, x is on {x.device}")
    if backend == "triton":
        from . import pwlu_triton

        if not pwlu_triton.available():
            raise RuntimeError(
                f"pwlu: backend 'triton' is unavailable: {pwlu_triton.unavailable_reason()}"
            )
        if x.device.type != "cuda" and not (x.device.type == "cpu" and triton_interpreting()):
            raise RuntimeError(
                f"pwlu: backend 'triton' needs CUDA tensors (x is on {x.device}); CPU tensors "
                "work only under Triton's interpreter, TRITON_INTERPRET=1"
            )
    return backend


def _check_inputs(x: torch.Tensor, params: tuple[torch.Tensor, ...], channel_dim: int) -> int:
    """Validate the arguments of :func:`pwlu`; return ``channel_dim`` made non-negative."""
    for name, value in zip(("x", *_PARAM_NAMES), (x, *params), strict=True):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"pwlu: {name} must be a tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"pwlu: {name} must be a floating-point tensor, got {value.dtype}")
        if value.device != x.device:
            raise ValueError(f"pwlu: {name} is on {value.device} but x is on {x.device}")
    bounds_and_slopes = {n: p for n, p in zip(_PARAM_NAMES, params, strict=True) if n != "heights"}
    heights = params[2]
    if heights.dim() not in (1, 2) or heights.shape[-1] < 2:
        raise ValueError(
            "pwlu: heights must be (N + 1,) for a layer-wise unit or (C, N + 1) for a "
            f"channel-wise one, with N >= 1 intervals; got shape {tuple(heights.shape)}"
        )
    if heights.dim() == 1:
        for name, p in bounds_and_slopes.items():
            if p.dim() != 0:
                raise ValueError(
                    f"pwlu: layer-wise heights {tuple(heights.shape)} need a 0-d {name}, got "
                    f"shape {tuple(p.shape)}"
                )
        return channel_dim if channel_dim >= 0 else max(x.dim() + channel_dim, 0)
    if not -x.dim() <= channel_dim < x.dim():
        raise ValueError(
            f"pwlu: channel_dim={channel_dim} is out of range for x of shape {tuple(x.shape)}"
        )
    channel_dim %= x.dim()
    channels = x.shape[channel_dim]
    if heights.shape[0] != channels:
        raise ValueError(
            f"pwlu: heights {tuple(heights.shape)} has {heights.shape[0]} rows but x "
            f"{tuple(x.shape)} has {channels} channels in dim {channel_dim}"
        )
    for name, p in bounds_and_slopes.items():
        if tuple(p.shape) != (channels,):
            raise ValueError(
                f"pwlu: channel-wise {name} must have shape ({channels},) for x "
                f"{tuple(x.shape)} with channel_dim={channel_dim}, got {tuple(p.shape)}"
            )
    return channel_dim


def canonical_params(
    left_bound: torch.Tensor,
    right_bound: torch.Tensor,
    heights: torch.Tensor,
    left_slope: torch.Tensor,
    right_slope: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The parameters in the fused backends' form: ``(P,)`` and heights ``(P, N + 1)``.

    Expects valid shapes (see :func:`pwlu`): channel-wise parameters are returned as they are
    (no per-call reshapes on this hot path), a layer-wise unit's become ``P = 1``.
    """
    if heights.dim() == 2:
        return left_bound, right_bound, heights, left_slope, right_slope
    return (
        left_bound.reshape(1),
        right_bound.reshape(1),
        heights.reshape(1, -1),
        left_slope.reshape(1),
        right_slope.reshape(1),
    )


def pwlu(
    x: torch.Tensor,
    left_bound: torch.Tensor,
    right_bound: torch.Tensor,
    heights: torch.Tensor,
    left_slope: torch.Tensor,
    right_slope: torch.Tensor,
    *,
    channel_dim: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """Piecewise Linear Unit: N uniform intervals on [B_L, B_R] plus two outer linear pieces.

    Differentiable in ``x`` and in all five parameters.

    Args:
        x: input of any shape and float dtype (float16/bfloat16 are computed in float32,
            float64 in float64) and any memory layout.
        left_bound, right_bound: B_L and B_R, 0-d (layer-wise) or ``(C,)`` (channel-wise,
            ``C = x.shape[channel_dim]``).
        heights: Y_0..Y_N at the breakpoints B_L + i (B_R - B_L) / N: ``(N + 1,)`` or
            ``(C, N + 1)``.
        left_slope, right_slope: K_L and K_R of the outer pieces, shaped like the bounds.
        channel_dim: the channel dimension of ``x`` (channel-wise only).
        backend: ``"auto"``, ``"reference"``, ``"cpp"`` or ``"triton"`` (see module doc).

    Returns:
        ``f(x)``, same shape, dtype and device as ``x``.

    Raises:
        TypeError: a non-tensor or non-floating-point argument.
        ValueError: mismatched shapes or devices, ``channel_dim`` out of range, unknown backend.
        RuntimeError: the requested backend is unavailable here.
    """
    params = (left_bound, right_bound, heights, left_slope, right_slope)
    channel_dim = _check_inputs(x, params, channel_dim)
    backend = resolve_backend(backend, x)
    if backend == "reference":
        return pwlu_reference(x, *params, channel_dim=channel_dim)
    canonical = canonical_params(*params)
    if backend == "cpp":
        return torch.ops.pwlu_det.pwlu_forward(x, *canonical, channel_dim)
    return torch.ops.pwlu_det.pwlu_triton_forward(x, *canonical, channel_dim)

"""The PWLU op: one operator per direction, a kernel per device, and the public ``pwlu()``.

``torch.ops.pwlu_det.pwlu_forward(x, left_bound, right_bound, heights, left_slope, right_slope,
channel_dim) -> y`` and ``torch.ops.pwlu_det.pwlu_backward(grad_y, x, <the five parameters>,
channel_dim) -> (grad_x, g_left_bound, g_right_bound, g_heights, g_left_slope, g_right_slope)``
are defined here, once, with their fake (meta) implementation and the autograd formula of the
forward (it saves only ``x`` and the parameters). The C++ extension registers the same formula
for CPU tensors (``csrc/pwlu/pwlu_autograd.cpp``, at the AutogradCPU key, which takes precedence
over this one): it saves the Python calls this one costs per forward and backward. Their
kernels, one per device:

- CPU: the fused C++ kernel (``csrc/``), registered by the C++ extension ``pwlu_det._C``;
- CUDA: the Triton kernels (:mod:`.pwlu_triton`), registered here. Under Triton's interpreter
  (``TRITON_INTERPRET=1``) they are the CPU kernels instead, and ``_C`` is not loaded: that is
  how the tests run the CUDA kernels without a GPU.

The dispatcher picks the kernel from the device of ``x``; ``pwlu()`` and the PWLU module call the
op directly (:func:`pwlu_canonical`). Where a device has no kernel (the extension not built,
Triton missing) they compute the plain-PyTorch reference instead (:mod:`.pwlu_reference`), with
a one-time warning; so does ``pwlu()`` while TorchScript scripts or traces or ONNX exports.

What ``torch.compile`` sees: the op as one opaque node (an extern kernel call in Inductor's
code), traced through its fake implementation, with no graph break; ``torch.export`` keeps it as
``torch.ops.pwlu_det.pwlu_forward``.

The ops take the parameters in a canonical form: ``(P,)`` for the bounds and slopes and
``(P, N + 1)`` for the heights, with ``P == 1`` for a layer-wise unit and ``P == C`` for a
channel-wise one, and a non-negative ``channel_dim``.
"""

from __future__ import annotations

import logging

import torch

from . import environment
from .pwlu_reference import pwlu_reference

__all__ = ["PARAM_NAMES", "canonical_params", "has_kernel", "pwlu", "pwlu_canonical"]

logger = logging.getLogger(__name__)

PARAM_NAMES = ("left_bound", "right_bound", "heights", "left_slope", "right_slope")
_PARAMS = (
    "Tensor left_bound, Tensor right_bound, Tensor heights, Tensor left_slope, Tensor right_slope"
)
FORWARD_SCHEMA = f"pwlu_forward(Tensor x, {_PARAMS}, int channel_dim) -> Tensor"
BACKWARD_SCHEMA = (
    f"pwlu_backward(Tensor grad_y, Tensor x, {_PARAMS}, int channel_dim) -> (Tensor grad_x, "
    "Tensor g_left_bound, Tensor g_right_bound, Tensor g_heights, Tensor g_left_slope, "
    "Tensor g_right_slope)"
)
_ARGUMENT_NAMES = ("x", *PARAM_NAMES)
_BOUND_AND_SLOPE_INDICES = (0, 1, 3, 4)  # the parameters shaped like the bounds
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


# --------------------------------------------------------------------------------------------
# The operators
# --------------------------------------------------------------------------------------------

_LIB = torch.library.Library("pwlu_det", "FRAGMENT")  # noqa: TOR901 (kept alive: owns the defs)
_LIB.define(FORWARD_SCHEMA)
_LIB.define(BACKWARD_SCHEMA)
_FORWARD = torch.ops.pwlu_det.pwlu_forward.default  # resolved once: pwlu() is per call


@torch.library.register_fake("pwlu_det::pwlu_forward")
def _forward_fake(x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim):
    check_canonical(x, (left_bound, right_bound, heights, left_slope, right_slope), channel_dim)
    return torch.empty_like(x)


@torch.library.register_fake("pwlu_det::pwlu_backward")
def _backward_fake(
    grad_y, x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim
):
    params = (left_bound, right_bound, heights, left_slope, right_slope)
    check_canonical(x, params, channel_dim)
    return (torch.empty_like(x), *(torch.empty_like(p) for p in params))


def _setup_context(ctx, inputs, output) -> None:
    *tensors, channel_dim = inputs
    ctx.save_for_backward(*tensors)  # x and the five parameters, nothing else
    ctx.channel_dim = channel_dim


def _backward(ctx, grad_y):
    grads = torch.ops.pwlu_det.pwlu_backward(grad_y, *ctx.saved_tensors, ctx.channel_dim)
    return (*grads, None)


torch.library.register_autograd("pwlu_det::pwlu_forward", _backward, setup_context=_setup_context)


def _triton_forward(x, *args):
    check_canonical(x, args[:5], args[5])
    from . import pwlu_triton  # registered only where it imports

    return pwlu_triton.forward(x, args[:5], args[5])


def _triton_backward(grad_y, x, *args):
    check_canonical(x, args[:5], args[5])
    if tuple(grad_y.shape) != tuple(x.shape):
        raise ValueError(
            f"pwlu_backward: grad_y {tuple(grad_y.shape)} does not match x {tuple(x.shape)}"
        )
    from . import pwlu_triton

    return pwlu_triton.backward(grad_y, x, args[:5], args[5])


def _register_kernels() -> dict[str, str]:
    """Register the kernels of each device; return ``{device type: why it has none}``.

    Whether the Triton kernels can run is decided here, once, by importing them: an installed
    Triton that fails to import registers nothing. Deciding it later, at a call, would put the
    import machinery inside code that ``torch.compile`` traces.
    """
    from . import pwlu_cpp  # loads _C, which registers the C++ CPU kernels (not when interpreting)

    missing = {}
    triton_reason = environment.triton_unavailable_reason()
    for device in environment.triton_devices():
        if triton_reason:
            missing[device] = f"the Triton kernels cannot run ({triton_reason})"
            continue
        torch.library.register_kernel("pwlu_det::pwlu_forward", device, _triton_forward, lib=_LIB)
        torch.library.register_kernel("pwlu_det::pwlu_backward", device, _triton_backward, lib=_LIB)
    if not environment.TRITON_INTERPRET and not pwlu_cpp.available():
        missing["cpu"] = f"the C++ extension is unavailable ({pwlu_cpp.unavailable_reason()})"
    return missing


_MISSING_KERNELS = _register_kernels()


def has_kernel(device_type: str) -> bool:
    """True when the op has a kernel for tensors on ``device_type`` (``"cpu"``, ``"cuda"``)."""
    return device_type in ("cpu", "cuda") and device_type not in _MISSING_KERNELS


# --------------------------------------------------------------------------------------------
# Checks and the public function
# --------------------------------------------------------------------------------------------


def check_canonical(x: torch.Tensor, params: tuple[torch.Tensor, ...], channel_dim: int) -> None:
    """Check the ops' arguments: canonical parameter shapes that match ``x``.

    Raises:
        ValueError: a shape that does not fit (the message names it).
    """
    left_bound, right_bound, heights, left_slope, right_slope = params
    if heights.dim() != 2 or heights.shape[1] < 2:
        raise ValueError(
            f"pwlu op: heights must be (P, N + 1) with N >= 1, got {tuple(heights.shape)}"
        )
    units = heights.shape[0]
    for name, p in zip(PARAM_NAMES, params, strict=True):
        if name != "heights" and tuple(p.shape) != (units,):
            raise ValueError(f"pwlu op: {name} must have shape ({units},), got {tuple(p.shape)}")
    if units != 1 and (not 0 <= channel_dim < x.dim() or x.shape[channel_dim] != units):
        raise ValueError(
            f"pwlu op: {units} parameter sets need x.shape[channel_dim] == {units}; x has shape "
            f"{tuple(x.shape)}, channel_dim={channel_dim}"
        )


def check_inputs(x: torch.Tensor, params: tuple[torch.Tensor, ...], channel_dim: int) -> int:
    """Validate the arguments of :func:`pwlu`; return ``channel_dim`` made non-negative.

    Written for the valid case, which every call pays for (a few microseconds against kernels
    of tens): one pass over the arguments, each shape read once.

    Raises:
        TypeError, ValueError: as :func:`pwlu`, naming the argument.
    """
    device = x.device if isinstance(x, torch.Tensor) else None  # a non-tensor x: raised below
    for name, value in zip(_ARGUMENT_NAMES, (x, *params), strict=True):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"pwlu: {name} must be a tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"pwlu: {name} must be a floating-point tensor, got {value.dtype}")
        if value.device != device:
            raise ValueError(f"pwlu: {name} is on {value.device} but x is on {device}")
    heights_shape = params[2].shape
    if len(heights_shape) not in (1, 2) or heights_shape[-1] < 2:
        raise ValueError(
            "pwlu: heights must be (N + 1,) for a layer-wise unit or (C, N + 1) for a "
            f"channel-wise one, with N >= 1 intervals; got shape {tuple(heights_shape)}"
        )
    x_shape = x.shape
    dims = len(x_shape)
    if len(heights_shape) == 1:
        for index in _BOUND_AND_SLOPE_INDICES:
            if params[index].dim() != 0:
                raise ValueError(
                    f"pwlu: layer-wise heights {tuple(heights_shape)} need a 0-d "
                    f"{PARAM_NAMES[index]}, got shape {tuple(params[index].shape)}"
                )
        return channel_dim if channel_dim >= 0 else max(dims + channel_dim, 0)
    if not -dims <= channel_dim < dims:
        raise ValueError(
            f"pwlu: channel_dim={channel_dim} is out of range for x of shape {tuple(x_shape)}"
        )
    channel_dim %= dims
    channels = x_shape[channel_dim]
    if heights_shape[0] != channels:
        raise ValueError(
            f"pwlu: heights {tuple(heights_shape)} has {heights_shape[0]} rows but x "
            f"{tuple(x_shape)} has {channels} channels in dim {channel_dim}"
        )
    for index in _BOUND_AND_SLOPE_INDICES:
        shape = params[index].shape
        if len(shape) != 1 or shape[0] != channels:
            raise ValueError(
                f"pwlu: channel-wise {PARAM_NAMES[index]} must have shape ({channels},) for x "
                f"{tuple(x_shape)} with channel_dim={channel_dim}, got {tuple(shape)}"
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


def pwlu_canonical(
    x: torch.Tensor, params: tuple[torch.Tensor, ...], channel_dim: int
) -> torch.Tensor:
    """The op on checked, canonical arguments (see :func:`canonical_params`); the reference,
    with a one-time warning, where ``x``'s device has no kernel."""
    if has_kernel(x.device.type):
        return _FORWARD(x, *params, channel_dim)
    _warn_once(
        x.device.type,
        f"pwlu: no kernel for {x.device.type} tensors "
        f"({_MISSING_KERNELS.get(x.device.type, 'none is built for this device')}); "
        "using the slow reference",
    )
    if params[2].shape[0] == 1:  # one unit: the same as its layer-wise form
        params = tuple(p[0] for p in params)
    return pwlu_reference(x, *params, channel_dim=channel_dim)


def pwlu(
    x: torch.Tensor,
    left_bound: torch.Tensor,
    right_bound: torch.Tensor,
    heights: torch.Tensor,
    left_slope: torch.Tensor,
    right_slope: torch.Tensor,
    *,
    channel_dim: int = 1,
) -> torch.Tensor:
    """Piecewise Linear Unit: N uniform intervals on [B_L, B_R] plus two outer linear pieces.

    Differentiable in ``x`` and in all five parameters. Runs the op's kernel for ``x``'s device
    (see the module doc).

    Args:
        x: input of any shape and float dtype (float16/bfloat16 are computed in float32,
            float64 in float64) and any memory layout.
        left_bound, right_bound: B_L and B_R, 0-d (layer-wise) or ``(C,)`` (channel-wise,
            ``C = x.shape[channel_dim]``).
        heights: Y_0..Y_N at the breakpoints B_L + i (B_R - B_L) / N: ``(N + 1,)`` or
            ``(C, N + 1)``.
        left_slope, right_slope: K_L and K_R of the outer pieces, shaped like the bounds.
        channel_dim: the channel dimension of ``x`` (channel-wise only).

    Returns:
        ``f(x)``, same shape, dtype and device as ``x``.

    Raises:
        TypeError: a non-tensor or non-floating-point argument.
        ValueError: mismatched shapes or devices, ``channel_dim`` out of range; on CPU also a
            unit whose ``right_bound`` is not above its ``left_bound`` (NaN bounds included).
            The CUDA kernels check no values (that would sync the host).
    """
    params = (left_bound, right_bound, heights, left_slope, right_slope)
    channel_dim = check_inputs(x, params, channel_dim)
    if _exporting():  # exported graphs hold standard ops only
        return pwlu_reference(x, *params, channel_dim=channel_dim)
    return pwlu_canonical(x, canonical_params(*params), channel_dim)

"""The fused C++ CPU backend: loads ``pwlu_det._C`` and teaches PyTorch its autograd and shapes.

The operators themselves are defined in C++ (``csrc/bindings.cpp``):
``torch.ops.pwlu_det.pwlu_forward`` and ``torch.ops.pwlu_det.pwlu_backward``. Here they get a
fake (meta) implementation, so ``torch.compile`` and ``torch.export`` trace through them without
graph breaks, and an autograd formula that saves only ``x`` and the parameters.
"""

from __future__ import annotations

import torch

__all__ = ["available", "cpu_capability", "set_cpu_capability", "unavailable_reason"]

try:
    from pwlu_det import _C  # noqa: F401  (loading it registers torch.ops.pwlu_det.*)
except ImportError as e:  # not built: `pip install --no-build-isolation -e .`
    _IMPORT_ERROR: str | None = f"pwlu_det._C could not be imported: {e}"
else:
    _IMPORT_ERROR = None


def available() -> bool:
    """True when the compiled extension is loaded."""
    return _IMPORT_ERROR is None


def unavailable_reason() -> str:
    """Why :func:`available` is False (empty when it is True)."""
    return _IMPORT_ERROR or ""


def cpu_capability() -> str:
    """The instruction set of the float32 loops: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    return torch.ops.pwlu_det.cpu_capability()


def set_cpu_capability(name: str) -> None:
    """Force the instruction set (``"avx512"``, ``"avx2"``, ``"scalar"`` or ``"best"``).

    Raises:
        RuntimeError: unknown name, or the CPU lacks those instructions.
    """
    torch.ops.pwlu_det.set_cpu_capability(name)


def _forward_fake(x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim):
    return torch.empty_like(x)


def _backward_fake(
    grad_y, x, left_bound, right_bound, heights, left_slope, right_slope, channel_dim
):
    return (
        torch.empty_like(x),
        torch.empty_like(left_bound),
        torch.empty_like(right_bound),
        torch.empty_like(heights),
        torch.empty_like(left_slope),
        torch.empty_like(right_slope),
    )


def _setup_context(ctx, inputs, output):
    *tensors, channel_dim = inputs
    ctx.save_for_backward(*tensors)
    ctx.channel_dim = channel_dim


def _backward(ctx, grad_y):
    grads = torch.ops.pwlu_det.pwlu_backward(grad_y, *ctx.saved_tensors, ctx.channel_dim)
    return (*grads, None)


if available():
    torch.library.register_fake("pwlu_det::pwlu_forward")(_forward_fake)
    torch.library.register_fake("pwlu_det::pwlu_backward")(_backward_fake)
    torch.library.register_autograd(
        "pwlu_det::pwlu_forward", _backward, setup_context=_setup_context
    )

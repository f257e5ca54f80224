"""The C++ extension ``pwlu_det._C``: loading it registers the CPU kernels of the PWLU op.

The op's schema, fake implementation and autograd formula are defined in :mod:`.pwlu_op`; the
extension adds only kernels (``csrc/bindings.cpp``: ``TORCH_LIBRARY_IMPL(pwlu_det, CPU)``) and the
instruction-set switch below. Under Triton's interpreter (``TRITON_INTERPRET=1``) it is not
loaded: CPU tensors then run the Triton kernels (see :mod:`.pwlu_op`).
"""

from __future__ import annotations

import os

import torch

__all__ = ["available", "cpu_capability", "set_cpu_capability", "unavailable_reason"]

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    _IMPORT_ERROR: str | None = (
        "not loaded under TRITON_INTERPRET=1 (CPU tensors run the Triton kernels)"
    )
else:
    try:
        from pwlu_det import _C  # noqa: F401  (loading it registers the CPU kernels)
    except ImportError as e:  # not built: `pip install --no-build-isolation -e .`
        _IMPORT_ERROR = f"pwlu_det._C could not be imported: {e}"
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

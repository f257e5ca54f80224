"""The C++ extension ``pwlu_det._C``: loading it registers the CPU kernels of the PWLU op.

The op's schema, fake implementation and autograd formula are defined in :mod:`.pwlu_op`; the
extension adds only kernels (``csrc/bindings.cpp``: ``TORCH_LIBRARY_IMPL(pwlu_det, CPU)``) and the
instruction-set switch below. Under Triton's interpreter (``TRITON_INTERPRET=1``) it is not
loaded: CPU tensors then run the Triton kernels (see :mod:`.pwlu_op`).

The float32 loops exist for AVX-512, AVX2 (with FMA) and plain scalar code; the best one the CPU
has is chosen at run time. The environment variable ``PWLU_DET_CPU_CAPABILITY`` (``avx512``,
``avx2`` or ``scalar``) caps that choice, as ``ATEN_CPU_CAPABILITY`` does for PyTorch, e.g. to
run the AVX2 loops on an AVX-512 machine. An unknown value, or one the CPU lacks, makes the import
fail with a ``ValueError`` naming the variable.
"""

from __future__ import annotations

import torch

from . import environment

__all__ = [
    "CAPABILITY_VARIABLE",
    "available",
    "cpu_capabilities",
    "cpu_capability",
    "set_cpu_capability",
    "unavailable_reason",
]

CAPABILITY_VARIABLE = "PWLU_DET_CPU_CAPABILITY"

if environment.TRITON_INTERPRET:
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
        # Checks PWLU_DET_CPU_CAPABILITY now, so that a bad value fails here and not at the
        # first op call (ValueError naming the variable).
        torch.ops.pwlu_det.cpu_capability()


def available() -> bool:
    """True when the compiled extension is loaded."""
    return _IMPORT_ERROR is None


def unavailable_reason() -> str:
    """Why :func:`available` is False (empty when it is True)."""
    return _IMPORT_ERROR or ""


def cpu_capability() -> str:
    """The instruction set of the float32 loops: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    return torch.ops.pwlu_det.cpu_capability()


def cpu_capabilities() -> list[str]:
    """The instruction sets the kernels may use here, best first.

    Those the CPU has, at or below the cap that ``PWLU_DET_CPU_CAPABILITY`` sets.
    """
    return list(torch.ops.pwlu_det.cpu_capabilities())


def set_cpu_capability(name: str) -> None:
    """Force the instruction set (``"avx512"``, ``"avx2"``, ``"scalar"`` or ``"best"``).

    ``"best"`` is the first of :func:`cpu_capabilities`.

    Raises:
        ValueError: unknown name, the CPU lacks those instructions, or
            ``PWLU_DET_CPU_CAPABILITY`` caps them; the message says which.
    """
    torch.ops.pwlu_det.set_cpu_capability(name)

"""What pwlu_det.layers reads from its environment, each decided once per process.

- :data:`TRITON_INTERPRET`: ``TRITON_INTERPRET=1`` when ``pwlu_det.layers`` was first imported.
  Triton reads the variable when a kernel is defined, so a later change cannot take effect.
  Under it the Triton kernels are the op's CPU kernels and the C++ extension is not loaded.
- :func:`triton_unavailable_reason`: whether the Triton kernels can run, decided by importing
  them. :mod:`.pwlu_op` asks once, at import, when it registers the kernels; an installed
  Triton that fails to import then registers no kernel, and ``pwlu()`` falls back to the
  reference, as for any device without a kernel. (Asking at a call instead would put the import
  machinery inside code that ``torch.compile`` traces.)
- ``PWLU_DET_CPU_CAPABILITY`` is read by the C++ extension itself (see :mod:`.pwlu_cpp`).
"""

from __future__ import annotations

import importlib.util
import os

__all__ = ["TRITON_INTERPRET", "triton_devices", "triton_unavailable_reason"]

TRITON_INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_devices() -> tuple[str, ...]:
    """The device types whose op kernels are the Triton kernels."""
    return ("cpu", "cuda") if TRITON_INTERPRET else ("cuda",)


def triton_unavailable_reason() -> str:
    """Why the Triton kernels cannot run here (``""`` when they can); imports them."""
    try:
        installed = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a finder that blocks the name, or a broken entry
        installed = False
    if not installed:
        return "triton is not installed"
    from . import pwlu_triton

    return pwlu_triton.unavailable_reason()

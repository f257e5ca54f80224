"""PWLU layers: the op (reference, C++ and Triton backends) and the module."""

from .pwlu_module import PWLU, REALIGN_MODES, RealignResult
from .pwlu_op import BACKENDS, pwlu, resolve_backend
from .pwlu_reference import pwlu_reference

__all__ = [
    "BACKENDS",
    "PWLU",
    "REALIGN_MODES",
    "RealignResult",
    "pwlu",
    "pwlu_reference",
    "resolve_backend",
]

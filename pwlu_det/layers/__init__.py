"""PWLU layers: the op (reference, C++ and Triton backends) and, later, the module."""

from .pwlu_op import BACKENDS, pwlu, resolve_backend
from .pwlu_reference import pwlu_reference

__all__ = ["BACKENDS", "pwlu", "pwlu_reference", "resolve_backend"]

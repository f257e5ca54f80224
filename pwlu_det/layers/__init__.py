"""PWLU layers: the op (C++ CPU and Triton CUDA kernels, plain-PyTorch reference) and the module."""

from .pwlu_module import PWLU, REALIGN_MODES, RealignResult
from .pwlu_op import PARAM_NAMES, has_kernel, pwlu
from .pwlu_reference import pwlu_reference

__all__ = [
    "PARAM_NAMES",
    "PWLU",
    "REALIGN_MODES",
    "RealignResult",
    "has_kernel",
    "pwlu",
    "pwlu_reference",
]

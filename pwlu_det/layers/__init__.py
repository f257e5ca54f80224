"""PWLU layers: the op (C++ CPU and Triton CUDA kernels, plain-PyTorch reference), the module,
its deployed forms and the activation registry."""

from .activations import ACTIVATION_LAYERS, create_activation, get_activation_layer
from .deploy import PWLUFusedOp, to_inference_form
from .pwlu_inference import PWLUInference
from .pwlu_module import (
    INIT_SHAPES,
    PWLU,
    REALIGN_MODES,
    STATE_NAMES,
    Phase,
    RealignResult,
    project_bounds,
)
from .pwlu_op import PARAM_NAMES, has_kernel, pwlu
from .pwlu_reference import breakpoints, pwlu_reference

__all__ = [
    "ACTIVATION_LAYERS",
    "INIT_SHAPES",
    "PARAM_NAMES",
    "PWLU",
    "PWLUFusedOp",
    "PWLUInference",
    "REALIGN_MODES",
    "STATE_NAMES",
    "Phase",
    "RealignResult",
    "breakpoints",
    "create_activation",
    "get_activation_layer",
    "has_kernel",
    "pwlu",
    "project_bounds",
    "pwlu_reference",
    "to_inference_form",
]

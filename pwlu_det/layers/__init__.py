"""PWLU layers: the op (C++ CPU and Triton CUDA kernels, plain-PyTorch reference), the module,
its deployed forms, the learned activations it is compared with and the activation registry."""

from .activations import ACTIVATION_LAYERS, create_activation, get_activation_layer
from .deploy import PWLUFusedOp, to_inference_form
from .learned_activations import ACONC, PAU, ActivationSite, FReLU, LearnedActivation, PReLU
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
    "ACONC",
    "ACTIVATION_LAYERS",
    "INIT_SHAPES",
    "PARAM_NAMES",
    "PAU",
    "PWLU",
    "REALIGN_MODES",
    "STATE_NAMES",
    "ActivationSite",
    "FReLU",
    "LearnedActivation",
    "PReLU",
    "PWLUFusedOp",
    "PWLUInference",
    "Phase",
    "RealignResult",
    "breakpoints",
    "create_activation",
    "get_activation_layer",
    "has_kernel",
    "project_bounds",
    "pwlu",
    "pwlu_reference",
    "to_inference_form",
]

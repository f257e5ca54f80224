"""Checkpoints: the atomic and strict checkpointer, reading state dicts, torchvision -> Detectron2
conversion and strict checkpoint checks."""

from .checkpointer import AtomicDetectionCheckpointer, check_checkpoint_exists
from .convert import (
    TORCHVISION_CONFIG,
    convert_torchvision_resnet,
    save_d2_pkl,
    torchvision_to_d2_key,
)
from .loading import (
    ShapeMismatch,
    check_checkpoint_complete,
    check_checkpoint_fits,
    check_same_activation,
    find_shape_mismatches,
    missing_backbone_keys,
    pwlu_state_keys,
)
from .state_dict import find_pwlu_units, load_state_dict, unreadable_checkpoint

__all__ = [
    "TORCHVISION_CONFIG",
    "AtomicDetectionCheckpointer",
    "ShapeMismatch",
    "check_checkpoint_complete",
    "check_checkpoint_exists",
    "check_checkpoint_fits",
    "check_same_activation",
    "convert_torchvision_resnet",
    "find_pwlu_units",
    "find_shape_mismatches",
    "load_state_dict",
    "missing_backbone_keys",
    "pwlu_state_keys",
    "save_d2_pkl",
    "torchvision_to_d2_key",
    "unreadable_checkpoint",
]

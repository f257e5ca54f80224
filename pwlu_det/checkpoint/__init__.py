"""Pretrained weights: torchvision -> Detectron2 conversion and strict checkpoint checks."""

from .convert import (
    TORCHVISION_CONFIG,
    convert_torchvision_resnet,
    load_torchvision_state_dict,
    save_d2_pkl,
    torchvision_to_d2_key,
)
from .loading import (
    PWLU_STATE_NAMES,
    ShapeMismatch,
    check_checkpoint_complete,
    check_checkpoint_fits,
    find_shape_mismatches,
    missing_backbone_keys,
    pwlu_state_keys,
)

__all__ = [
    "PWLU_STATE_NAMES",
    "TORCHVISION_CONFIG",
    "ShapeMismatch",
    "check_checkpoint_complete",
    "check_checkpoint_fits",
    "convert_torchvision_resnet",
    "find_shape_mismatches",
    "load_torchvision_state_dict",
    "missing_backbone_keys",
    "pwlu_state_keys",
    "save_d2_pkl",
    "torchvision_to_d2_key",
]

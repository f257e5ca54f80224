"""Convert torchvision ResNet weights to a Detectron2 ImageNet ``.pkl`` (``MODEL.WEIGHTS``).

torchvision and Detectron2 build the same ResNet under different names::

    conv1, bn1                      -> stem.conv1, stem.conv1.norm
    layer{N}.{i}.conv{K}, .bn{K}    -> res{N+1}.{i}.conv{K}, .conv{K}.norm
    layer{N}.{i}.downsample.0, .1   -> res{N+1}.{i}.shortcut, .shortcut.norm
    fc                              -> (dropped: the detector has no classifier)

The ``.pkl`` holds ``{"model": {name: numpy array}, "__author__": ...,
"matching_heuristics": True}``; Detectron2's checkpointer then matches ``res2.0.conv1.weight``
to ``backbone.bottom_up.res2.0.conv1.weight`` by name suffix.

A converted model is only equivalent to the torchvision one with the config of
:data:`TORCHVISION_CONFIG`: torchvision's Bottleneck puts the stride in the 3x3 conv
(``STRIDE_IN_1X1 False``), and its models take RGB input normalised by the ImageNet mean/std
(in 0-255 units below, since Detectron2 normalises raw pixel values).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping

import numpy as np
import torch

__all__ = [
    "TORCHVISION_CONFIG",
    "convert_torchvision_resnet",
    "save_d2_pkl",
    "torchvision_to_d2_key",
]

logger = logging.getLogger(__name__)

# Config options (``cfg.merge_from_list`` form) that make a Detectron2 ResNet compute what the
# converted torchvision ResNet computes.
TORCHVISION_CONFIG: list[str] = [
    "MODEL.RESNETS.NORM",
    "FrozenBN",
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "False",
    "INPUT.FORMAT",
    "RGB",
    "MODEL.PIXEL_MEAN",
    "[123.675, 116.28, 103.53]",
    "MODEL.PIXEL_STD",
    "[58.395, 57.12, 57.375]",
]

_NORM_FIELDS = ("weight", "bias", "running_mean", "running_var")
_STEM = re.compile(r"^(conv1|bn1)\.(\w+)$")
_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")


def torchvision_to_d2_key(key: str) -> str | None:
    """The Detectron2 name of a torchvision ResNet state-dict key.

    Args:
        key: a torchvision ResNet key, e.g. ``"layer1.0.bn2.running_var"``.

    Returns:
        The Detectron2 key (``"res2.0.conv2.norm.running_var"``), or None for a key the
        detector does not use (``fc.*``, ``*.num_batches_tracked``).

    Raises:
        ValueError: ``key`` is not a torchvision ResNet key.
    """
    if key.startswith("fc.") or key.endswith(".num_batches_tracked"):
        return None
    stem = _STEM.match(key)
    if stem:
        layer, field = stem.groups()
        if layer == "conv1" and field == "weight":
            return "stem.conv1.weight"
        if layer == "bn1" and field in _NORM_FIELDS:
            return f"stem.conv1.norm.{field}"
    block = _BLOCK.match(key)
    if block:
        stage, index, layer, field = block.groups()
        prefix = f"res{int(stage) + 1}.{index}"
        is_norm = layer.startswith("bn") or layer == "downsample.1"
        if is_norm and field in _NORM_FIELDS:
            owner = "shortcut" if layer == "downsample.1" else f"conv{layer[2:]}"
            return f"{prefix}.{owner}.norm.{field}"
        if not is_norm and field == "weight":
            owner = "shortcut" if layer == "downsample.0" else layer
            return f"{prefix}.{owner}.weight"
    raise ValueError(f"{key!r} is not a key of a torchvision ResNet (conv1, bn1, layer1-4, fc)")


def convert_torchvision_resnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Rename a torchvision ResNet state dict to Detectron2's ResNet names.

    Args:
        state_dict: ``torchvision.models.resnet*().state_dict()`` (any depth).

    Returns:
        ``{Detectron2 key: numpy array}`` without the classifier (``fc``) and the BatchNorm
        ``num_batches_tracked`` counters, ready for :func:`save_d2_pkl`.

    Raises:
        ValueError: a key that is not a torchvision ResNet key (the message names it).
    """
    converted: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        new_key = torchvision_to_d2_key(key)
        if new_key is None:
            logger.debug("dropped %s", key)
            continue
        converted[new_key] = value.detach().cpu().numpy()
    logger.info("converted %d of %d torchvision tensors", len(converted), len(state_dict))
    return converted


def save_d2_pkl(
    weights: Mapping[str, np.ndarray], path: str | os.PathLike, author: str = "torchvision"
) -> None:
    """Write ``weights`` as a Detectron2 ImageNet ``.pkl``.

    Args:
        weights: ``{Detectron2 backbone key without "backbone.bottom_up.": numpy array}``.
        path: output file; must end with ``.pkl`` (Detectron2 picks the reader by extension).
        author: recorded as ``__author__``. Detectron2 reads a ``.pkl`` without that key, or
            with ``"Caffe2"`` there, as a Caffe2 file and renames its keys; so not ``"Caffe2"``.

    Raises:
        ValueError: ``path`` does not end with ``.pkl``, or ``author`` is ``"Caffe2"``.
    """
    if not str(path).endswith(".pkl"):
        raise ValueError(f"{path}: a Detectron2 weights file must end with .pkl")
    if author == "Caffe2":
        raise ValueError("author 'Caffe2' would make Detectron2 rename the keys as Caffe2 names")
    data = {
        "model": {key: np.asarray(value) for key, value in weights.items()},
        "__author__": author,
        "matching_heuristics": True,
    }
    with open(path, "wb") as f:
        pickle.dump(data, f)
    logger.info("wrote %d tensors to %s", len(weights), path)

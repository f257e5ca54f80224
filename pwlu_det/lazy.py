"""PWLU in Detectron2's LazyConfig python configs.

A lazy config holds the PWLU options in a top-level node ``pwlu``, with the same keys as the
yacs config (``MODEL.ACTIVATION`` and ``MODEL.PWLU``), validated as they are; and its model is a
Detectron2 lazy model whose ReLU places take the activation from ``pwlu``::

    from detectron2.model_zoo import get_config
    from pwlu_det.lazy import pwlu_options, with_activation

    _base = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
    dataloader, optimizer, lr_multiplier, train = (
        _base.dataloader, _base.optimizer, _base.lr_multiplier, _base.train
    )
    model = with_activation(_base.model)  # ResNet/RegNet, top block, RPN, box, mask, RetinaNet
    pwlu = pwlu_options(NAME="PWLU", STATISTICS_ITERS=4500)

The model refers to ``${pwlu}``, so a command-line override such as
``pwlu.PWLU.NUM_INTERVALS=8`` reaches every unit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from detectron2.config import CfgNode
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.regnet import RegNet
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.modeling.proposal_generator.rpn import StandardRPNHead
from detectron2.modeling.roi_heads.box_head import FastRCNNConvFCHead
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

from pwlu_det.config import default_pwlu_config, validate_pwlu_config
from pwlu_det.modeling.activation import ActivationFactory, activation_factory
from pwlu_det.modeling.backbone import ActLastLevelP6P7, ActResNet
from pwlu_det.modeling.heads import ActFastRCNNConvFCHead, ActMaskRCNNConvUpsampleHead, ActRPNHead
from pwlu_det.modeling.regnet import ActRegNet
from pwlu_det.modeling.retinanet import ActRetinaNetHead

__all__ = [
    "SWAPS",
    "lazy_activation",
    "lazy_learn_in_frozen_stages",
    "lazy_target",
    "pwlu_cfg",
    "pwlu_options",
    "with_activation",
]

_SECTIONS = ("ACTIVATION", "PWLU")

# Detectron2 class in a lazy model -> (pwlu_det class taking ``activation``, model part)
SWAPS: dict[type, tuple[type, str]] = {
    ResNet: (ActResNet, "backbone"),
    RegNet: (ActRegNet, "backbone"),
    LastLevelP6P7: (ActLastLevelP6P7, "backbone"),
    StandardRPNHead: (ActRPNHead, "head"),
    FastRCNNConvFCHead: (ActFastRCNNConvFCHead, "head"),
    MaskRCNNConvUpsampleHead: (ActMaskRCNNConvUpsampleHead, "head"),
    RetinaNetHead: (ActRetinaNetHead, "head"),
}


#: Swapped backbones that take ``learn_in_frozen_stages`` (the ones with ``freeze_at``).
_FREEZING = (ActResNet, ActRegNet)


def pwlu_options(**values: Any) -> DictConfig:
    """The ``pwlu`` node of a lazy config: pwlu_det's defaults, then ``values``.

    Args:
        values: keys of ``MODEL.ACTIVATION`` (``NAME``, ``SCOPE``) or ``MODEL.PWLU``
            (``STATISTICS_ITERS``, ...), by their yacs names.

    Returns:
        ``{"ACTIVATION": {...}, "PWLU": {...}}`` as a DictConfig (checked by :func:`pwlu_cfg`).
    """
    defaults = default_pwlu_config().MODEL
    options = {section: dict(defaults[section]) for section in _SECTIONS}
    for key, value in values.items():
        sections = [s for s in _SECTIONS if key in options[s]]
        if not sections:
            raise ValueError(f"pwlu_options: {key!r} is in neither MODEL.ACTIVATION nor MODEL.PWLU")
        options[sections[0]][key] = value
    pwlu_cfg(options)
    return OmegaConf.create(options)


def pwlu_cfg(options: Mapping) -> CfgNode:
    """A yacs config (Detectron2 defaults + pwlu_det keys) holding a lazy config's ``pwlu``.

    This is what the yacs path validates and reads (activation factories, realignment hook,
    optimizer rules), so both paths share one vocabulary and one validation. It is built once
    per distinct ``pwlu`` node, not once per model part that asks, and returned frozen.

    Raises:
        ValueError: an unknown section or key, or a value that ``validate_pwlu_config`` refuses.
    """
    if isinstance(options, DictConfig):
        options = OmegaConf.to_container(options, resolve=True)
    return _pwlu_cfg(json.dumps(options, sort_keys=True))


@functools.lru_cache(maxsize=16)
def _pwlu_cfg(options_json: str) -> CfgNode:
    options = json.loads(options_json)
    cfg = default_pwlu_config()
    for section, values in options.items():
        if section not in _SECTIONS:
            raise ValueError(f"pwlu.{section}: unknown section, expected one of {_SECTIONS}")
        node = cfg.MODEL[section]
        for key, value in values.items():
            if key not in node:
                raise ValueError(
                    f"pwlu.{section}.{key} is not a pwlu_det option; MODEL.{section} has "
                    f"{sorted(node)}"
                )
            if isinstance(node[key], float) and isinstance(value, int):
                value = float(value)  # python configs write 10 for 10.0
            node[key] = value
    try:
        validate_pwlu_config(cfg)
    except ValueError as e:
        raise ValueError(f"the lazy config's pwlu node: {e}") from e
    cfg.freeze()
    return cfg


def lazy_activation(options: Mapping, part: str) -> ActivationFactory:
    """The activation factory of a model part (``"backbone"`` or ``"head"``) from ``pwlu``."""
    return activation_factory(pwlu_cfg(options), part)


def lazy_learn_in_frozen_stages(options: Mapping) -> bool:
    """``MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES`` of ``pwlu`` (for the swapped backbones)."""
    return pwlu_cfg(options).MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES


def lazy_target(node: DictConfig) -> Any:
    """The callable a lazy node's ``_target_`` names (located if it is a string)."""
    target = node._target_
    return locate(target) if isinstance(target, str) else target


def with_activation(model: DictConfig, options: str | Mapping = "${pwlu}") -> DictConfig:
    """Give a Detectron2 lazy model the configured activation, in place.

    Every node whose target is a key of :data:`SWAPS` gets the pwlu_det class instead, with
    ``activation=L(lazy_activation)(options=options, part=...)``. The other arguments are
    kept, so any lazy model (R50-FPN, the LSJ recipes, RegNetX/Y) works.

    Args:
        model: the ``model`` node of a lazy config.
        options: the PWLU options, by default the config's own ``pwlu`` node.

    Returns:
        ``model``.

    Raises:
        ValueError: nothing in ``model`` takes an activation.
    """
    swapped = []

    def visit(node: Any) -> None:
        if isinstance(node, DictConfig):
            swap = SWAPS.get(lazy_target(node)) if "_target_" in node else None
            if swap is not None:
                cls, part = swap
                node._target_ = cls
                node.activation = L(lazy_activation)(options=options, part=part)
                if cls in _FREEZING:
                    node.learn_in_frozen_stages = L(lazy_learn_in_frozen_stages)(options=options)
                swapped.append(cls.__name__)
            keys = [k for k in node if k not in ("activation", "learn_in_frozen_stages")]
        elif isinstance(node, ListConfig):
            keys = range(len(node))
        else:
            return
        for key in keys:
            if not OmegaConf.is_interpolation(node, key):
                visit(node[key])

    visit(model)
    if not swapped:
        raise ValueError(
            "with_activation: the model has none of "
            f"{sorted(c.__name__ for c in SWAPS)}, so no activation was replaced"
        )
    return model

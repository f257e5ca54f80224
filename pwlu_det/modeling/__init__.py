"""PWLU-equipped backbones, heads and meta-architectures, registered with Detectron2.

Importing this package registers: backbones ``build_act_resnet_backbone``,
``build_act_resnet_fpn_backbone``, ``build_act_retinanet_resnet_fpn_backbone``; RPN head
``ActRPNHead``; ROI heads ``ActFastRCNNConvFCHead`` (box) and ``ActMaskRCNNConvUpsampleHead``
(mask); meta-architecture ``ActRetinaNet``.
"""

from .activation import ActivationFactory, activation_factory
from .backbone import (
    ActLastLevelP6P7,
    build_act_resnet_backbone,
    build_act_resnet_fpn_backbone,
    build_act_retinanet_resnet_fpn_backbone,
)
from .heads import ActFastRCNNConvFCHead, ActMaskRCNNConvUpsampleHead, ActRPNHead
from .retinanet import ActRetinaNet, ActRetinaNetHead

__all__ = [
    "ActFastRCNNConvFCHead",
    "ActLastLevelP6P7",
    "ActMaskRCNNConvUpsampleHead",
    "ActRPNHead",
    "ActRetinaNet",
    "ActRetinaNetHead",
    "ActivationFactory",
    "activation_factory",
    "build_act_resnet_backbone",
    "build_act_resnet_fpn_backbone",
    "build_act_retinanet_resnet_fpn_backbone",
]

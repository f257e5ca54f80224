"""RetinaNet with the configured activation in its head subnets.

Detectron2 has no registry for RetinaNet heads: ``RetinaNet.from_config`` builds
``RetinaNetHead`` directly. ``ActRetinaNet`` is a registered meta-architecture that overrides
only ``from_config`` to put an :class:`ActRetinaNetHead` in its place.
"""

from __future__ import annotations

from collections.abc import Callable

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import nn

from .activation import RELU, HeadActivationMixin

__all__ = ["ActRetinaNet", "ActRetinaNetHead"]


class ActRetinaNetHead(HeadActivationMixin, RetinaNetHead):
    """RetinaNetHead with the configured activation after each conv (and its norm, if
    ``MODEL.RETINANET.NORM`` is set) of both subnets."""

    @configurable
    def __init__(self, *, activation: Callable[..., nn.Module] = RELU, **kwargs):
        super().__init__(**kwargs)
        for subnet in (self.cls_subnet, self.bbox_subnet):
            channels, norm = None, None
            for index, module in enumerate(subnet):
                if isinstance(module, nn.Conv2d):
                    channels, norm = module.out_channels, None
                elif isinstance(module, nn.ReLU):
                    subnet[index] = activation(channels, norm=norm)
                else:  # the subnet is [conv, norm, ReLU] * N, or [conv, ReLU] * N
                    norm = module


@META_ARCH_REGISTRY.register()
class ActRetinaNet(RetinaNet):
    """RetinaNet whose head is an :class:`ActRetinaNetHead`."""

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        shapes = ret["backbone"].output_shape()
        ret["head"] = ActRetinaNetHead(cfg, [shapes[f] for f in cfg.MODEL.RETINANET.IN_FEATURES])
        return ret

"""RPN, box and mask heads whose activations come from the activation factory.

Each is Detectron2's head, registered under a new name, with ``activation`` added to its
``@configurable`` arguments; after Detectron2's constructor ran, the ReLU modules it built are
replaced in place (same names, same order: the box and mask heads are ``nn.Sequential`` and
must keep their modules in forward order for TorchScript).
"""

from __future__ import annotations

from collections.abc import Callable

from detectron2.config import configurable
from detectron2.modeling.proposal_generator.rpn import RPN_HEAD_REGISTRY, StandardRPNHead
from detectron2.modeling.roi_heads.box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
)
from torch import nn

from .activation import RELU, HeadActivationMixin

__all__ = ["ActFastRCNNConvFCHead", "ActMaskRCNNConvUpsampleHead", "ActRPNHead"]

Factory = Callable[..., nn.Module]


@RPN_HEAD_REGISTRY.register()
class ActRPNHead(HeadActivationMixin, StandardRPNHead):
    """StandardRPNHead with the configured activation after its shared 3x3 conv(s) (no norm)."""

    @configurable
    def __init__(self, *, activation: Factory = RELU, **kwargs):
        super().__init__(**kwargs)
        convs = [self.conv] if not isinstance(self.conv, nn.Sequential) else list(self.conv)
        for conv in convs:
            conv.activation = activation(conv.out_channels, norm=conv.norm)


@ROI_BOX_HEAD_REGISTRY.register()
class ActFastRCNNConvFCHead(HeadActivationMixin, FastRCNNConvFCHead):
    """FastRCNNConvFCHead with the configured activation after every conv and fc (a vector
    input, ``spatial=False``, without norm)."""

    @configurable
    def __init__(self, input_shape, *, activation: Factory = RELU, **kwargs):
        super().__init__(input_shape, **kwargs)
        for conv in self.conv_norm_relus:
            conv.activation = activation(conv.out_channels, norm=conv.norm)
        for k, fc in enumerate(self.fcs):
            act = activation(fc.out_features, spatial=False)
            self.add_module(f"fc_relu{k + 1}", act)  # same slot


@ROI_MASK_HEAD_REGISTRY.register()
class ActMaskRCNNConvUpsampleHead(HeadActivationMixin, MaskRCNNConvUpsampleHead):
    """MaskRCNNConvUpsampleHead with the configured activation after every conv and the deconv
    (which has no norm)."""

    @configurable
    def __init__(self, input_shape, *, activation: Factory = RELU, **kwargs):
        super().__init__(input_shape, **kwargs)
        for conv in self.conv_norm_relus:
            conv.activation = activation(conv.out_channels, norm=conv.norm)
        self.add_module("deconv_relu", activation(self.deconv.out_channels))  # same slot

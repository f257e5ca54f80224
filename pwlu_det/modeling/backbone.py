"""ResNet and FPN backbones whose activations come from the activation factory.

Detectron2's ResNet applies ``F.relu_`` inline in the ``forward`` of its stem and blocks. Here
Detectron2 builds the ResNet as usual (every ``MODEL.RESNETS`` option, ``FREEZE_AT`` included);
then each stem and block gets activation modules and its class is switched to a subclass whose
``forward`` calls them instead of ``F.relu_``. That ``forward`` is the only code overridden.
:class:`ActResNet` is the same for LazyConfig (``L(ActResNet)(..., activation=...)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    ResNet,
    build_resnet_backbone,
)
from torch import nn

from .activation import activation_factory

__all__ = [
    "ActBasicBlock",
    "ActBasicStem",
    "ActBottleneckBlock",
    "ActLastLevelP6P7",
    "ActResNet",
    "add_activations",
    "set_activation",
    "build_act_resnet_backbone",
    "build_act_resnet_fpn_backbone",
    "build_act_retinanet_resnet_fpn_backbone",
]


class ActBasicStem(BasicStem):
    """BasicStem with ``self.act`` where Detectron2 applies ReLU."""

    def forward(self, x):
        x = self.act(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ActBasicBlock(BasicBlock):
    """BasicBlock (R18/R34) with ``act1`` after conv1 and ``act2`` after the residual sum."""

    def forward(self, x):
        out = self.conv2(self.act1(self.conv1(x)))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act2(out + shortcut)


class ActBottleneckBlock(BottleneckBlock):
    """BottleneckBlock with ``act1``/``act2`` after conv1/conv2, ``act3`` after the sum."""

    def forward(self, x):
        out = self.act2(self.conv2(self.act1(self.conv1(x))))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act3(out + shortcut)


# Detectron2 class -> (our subclass, [(activation name, the conv whose output it sees)]): the
# activation gets that conv's channels and norm.
_CONVERSIONS: dict[type, tuple[type, tuple[tuple[str, str], ...]]] = {
    BasicStem: (ActBasicStem, (("act", "conv1"),)),
    BasicBlock: (ActBasicBlock, (("act1", "conv1"), ("act2", "conv2"))),
    BottleneckBlock: (
        ActBottleneckBlock,
        (("act1", "conv1"), ("act2", "conv2"), ("act3", "conv3")),
    ),
}


def set_activation(
    block: nn.Module, name: str, activation: nn.Module, learn_in_frozen_stages: bool = False
) -> None:
    """Put ``activation`` into ``block`` as its submodule ``name``, frozen if ``block`` is.

    A block frozen by ``FREEZE_AT`` (no parameter requires grad) gets a frozen activation: a
    frozen PWLU stays exactly what it was built as. With ``learn_in_frozen_stages`` the
    activation's parameters learn there too (the block's convs and norms stay frozen).
    """
    frozen = not learn_in_frozen_stages and not any(p.requires_grad for p in block.parameters())
    for p in activation.parameters():
        p.requires_grad_(not frozen)
    block.add_module(name, activation)


def add_activations(
    resnet: ResNet,
    make_activation: Callable[..., nn.Module],
    learn_in_frozen_stages: bool = False,
) -> ResNet:
    """Give every stem/block of a Detectron2 ResNet its activation modules, in place.

    Each is ``make_activation(channels, norm=norm)`` with the channels and norm of the conv
    before it (for ``act2``/``act3``, the residual branch's last conv).

    Blocks frozen by ``FREEZE_AT`` get frozen activations (a frozen PWLU stays exactly ReLU),
    unless ``learn_in_frozen_stages``.

    Raises:
        NotImplementedError: a block type without an activation-aware subclass (deformable).
    """
    for block in [resnet.stem, *(b for stage in resnet.stages for b in stage)]:
        if type(block) not in _CONVERSIONS:
            raise NotImplementedError(
                f"{type(block).__name__} has no activation-aware version in pwlu_det "
                "(deformable convolutions need Detectron2's C++ extension and are not supported)"
            )
        subclass, activations = _CONVERSIONS[type(block)]
        for name, conv_name in activations:
            conv = getattr(block, conv_name)
            activation = make_activation(conv.out_channels, norm=conv.norm)
            set_activation(block, name, activation, learn_in_frozen_stages)
        block.__class__ = subclass
    return resnet


class ActResNet(ResNet):
    """Detectron2's ``ResNet`` with ``activation(channels)`` where it applies ReLU.

    For LazyConfig: the arguments are ``ResNet``'s, plus ``activation``, a factory such as
    :class:`~pwlu_det.modeling.ActivationFactory`, and ``learn_in_frozen_stages`` (the
    activations of stages frozen by ``freeze_at`` learn; ``MODEL.ACTIVATION`` key of the same
    name). The stem and blocks become the ``Act*`` classes above, exactly as
    :func:`build_act_resnet_backbone` makes them.
    """

    def __init__(
        self,
        stem,
        stages,
        *,
        activation: Callable[..., nn.Module],
        learn_in_frozen_stages: bool = False,
        **kwargs,
    ):
        super().__init__(stem, stages, **kwargs)  # freezes FREEZE_AT stages first
        add_activations(self, activation, learn_in_frozen_stages)


@BACKBONE_REGISTRY.register()
def build_act_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Detectron2's ResNet (any depth, stem and blocks) with the configured activation."""
    return add_activations(
        build_resnet_backbone(cfg, input_shape),
        activation_factory(cfg, "backbone"),
        cfg.MODEL.ACTIVATION.LEARN_IN_FROZEN_STAGES,
    )


class ActLastLevelP6P7(LastLevelP6P7):
    """RetinaNet's P6/P7 block with ``self.act = activation(out_channels)`` on P6 (Detectron2
    applies ReLU; P6 has no norm). It is built not to work in place: P6 itself is one of the
    outputs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        activation: Callable[..., nn.Module],
        in_feature: str = "res5",
    ):
        super().__init__(in_channels, out_channels, in_feature)
        self.act = activation(out_channels, inplace=False)

    def forward(self, c5):
        p6 = self.p6(c5)
        return [p6, self.p7(self.act(p6))]


def _fpn(cfg, bottom_up: Backbone, top_block: nn.Module) -> FPN:
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_act_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet-FPN for R-CNN (P2-P6) with the configured activation in the ResNet."""
    return _fpn(cfg, build_act_resnet_backbone(cfg, input_shape), LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_act_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet-FPN for RetinaNet (P3-P7) with the configured activation, P6->P7 included."""
    bottom_up = build_act_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_block = ActLastLevelP6P7(
        bottom_up.output_shape()["res5"].channels,
        out_channels,
        activation=activation_factory(cfg, "backbone"),
    )
    return _fpn(cfg, bottom_up, top_block)

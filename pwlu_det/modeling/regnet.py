"""RegNet backbones whose activations come from an activation factory, channel-wise.

Detectron2's ``RegNet`` builds every activation as ``activation_class()``, with no channel count,
so a channel-wise PWLU cannot be made there. :class:`ActRegNet` lets Detectron2 build the RegNet
as usual, then replaces each activation module by ``activation(channels, norm=norm)``, where
``channels`` is the output width of the convolution before it and ``norm`` its norm. The
modules keep their names, and RegNet's ``forward`` calls them by name, so no ``forward`` is
overridden.

The squeeze-and-excitation (SE) modules of RegNetY keep Detectron2's ReLU by default
(``se_activation=False``). That ReLU acts on a globally pooled vector, with one value per
channel per image. A channel-wise PWLU there would collect its Phase I statistics from
``IMS_PER_BATCH`` values per iteration, where the other units get ``IMS_PER_BATCH x H x W``, and
its output only feeds a sigmoid gate. The PWLU, Swish and ReLU configs therefore differ in the
stem and block activations only. Pass ``se_activation=True`` to replace those too.
"""

from __future__ import annotations

from collections.abc import Callable

from detectron2.modeling.backbone.regnet import (
    SE,
    BasicTransform,
    BottleneckTransform,
    RegNet,
    ResBasicBlock,
    ResBottleneckBlock,
    ResStem,
    SimpleStem,
    VanillaBlock,
)
from torch import nn

from .backbone import set_activation

__all__ = ["ActRegNet", "add_regnet_activations"]

# Detectron2 RegNet module -> [(its activation's name, the conv whose output it sees, its norm)]
_ACTIVATIONS: dict[type, list[tuple[str, str, str]]] = {
    ResStem: [("af", "conv", "bn")],
    SimpleStem: [("af", "conv", "bn")],
    VanillaBlock: [("a_af", "a", "a_bn"), ("b_af", "b", "b_bn")],
    BasicTransform: [("a_af", "a", "a_bn")],
    ResBasicBlock: [("af", "f.b", "f.b_bn")],
    BottleneckTransform: [("a_af", "a", "a_bn"), ("b_af", "b", "b_bn")],
    ResBottleneckBlock: [("af", "f.c", "f.c_bn")],
}


def add_regnet_activations(
    regnet: RegNet,
    make_activation: Callable[..., nn.Module],
    se_activation: bool = False,
    learn_in_frozen_stages: bool = False,
) -> RegNet:
    """Replace the activations of a Detectron2 RegNet by ``make_activation(channels, ...)``, in
    place.

    Args:
        regnet: a Detectron2 ``RegNet`` (or ``AnyNet``) built with its default activation.
        make_activation: the factory, called with the channel count of each activation's input
            and the norm before it (``spatial=False`` and no norm in the SE modules, whose input
            is pooled to 1x1).
        se_activation: also replace the activation inside the SE modules (see the module
            docstring for why the default keeps Detectron2's ReLU there).
        learn_in_frozen_stages: the activations of stages frozen by ``freeze_at`` learn too.

    Raises:
        NotImplementedError: a stem or block type this function does not know.
    """
    for module in list(regnet.modules()):
        if isinstance(module, SE):
            if se_activation:
                channels = module.f_ex[0].out_channels
                activation = make_activation(channels, spatial=False)
                set_activation(module.f_ex, "1", activation, learn_in_frozen_stages)
            continue
        if type(module) in _ACTIVATIONS:
            for name, source, norm in _ACTIVATIONS[type(module)]:
                channels = module.get_submodule(source).out_channels
                activation = make_activation(channels, norm=module.get_submodule(norm))
                set_activation(module, name, activation, learn_in_frozen_stages)
        elif hasattr(module, "af") or hasattr(module, "a_af"):
            raise NotImplementedError(
                f"{type(module).__name__}: a RegNet module type without a known activation "
                "layout in pwlu_det"
            )
    return regnet


class ActRegNet(RegNet):
    """Detectron2's ``RegNet`` with ``activation(channels)`` at every activation.

    For LazyConfig: the arguments are ``RegNet``'s, plus ``activation`` (a factory such as
    :class:`~pwlu_det.modeling.ActivationFactory`), ``se_activation`` and
    ``learn_in_frozen_stages``.
    """

    def __init__(
        self,
        *args,
        activation: Callable[..., nn.Module],
        se_activation: bool = False,
        learn_in_frozen_stages: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)  # freezes freeze_at stages first
        add_regnet_activations(self, activation, se_activation, learn_in_frozen_stages)

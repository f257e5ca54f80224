"""One activation factory for every model part: PWLU, Swish (SiLU), ReLU or a learned baseline
(PReLU, ACON-C, FReLU, PAU), chosen by config.

The backbone and head code asks a factory for "an activation for C channels" wherever
Detectron2 puts a ReLU, and tells it what the site has: the norm before it (FReLU copies it)
and whether its input is a vector. The config alone decides which activation, so the models
differ only in their activations.
"""

from __future__ import annotations

from collections.abc import Callable

from detectron2.config import CfgNode
from torch import nn

from pwlu_det.layers import PWLU, create_activation, get_activation_layer

__all__ = ["RELU", "ActivationFactory", "HeadActivationMixin", "activation_factory"]


class ActivationFactory:
    """Builds activation modules: ``factory(num_channels)`` returns a new module.

    Args:
        name: a key of :data:`pwlu_det.layers.ACTIVATION_LAYERS`: ``"PWLU"``, ``"Swish"``
            (= ``"SiLU"``), ``"ReLU"``, ``"PReLU"``, ``"ACON-C"``, ``"FReLU"`` or ``"PAU"``.
        pwlu_kwargs: keyword arguments of :class:`PWLU` besides ``num_channels``; with
            ``channel_wise=False`` in them removed and turned into layer-wise units.
        channel_wise: PWLU granularity (one unit per channel, or one per layer). The learned
            baselines have theirs fixed: PReLU, ACON-C and FReLU per channel, PAU per layer.
    """

    def __init__(self, name: str = "ReLU", channel_wise: bool = True, **pwlu_kwargs):
        # an unknown name fails here, not at the first layer
        self.layer_wise_pwlu = not channel_wise and issubclass(get_activation_layer(name), PWLU)
        self.name = name
        self.pwlu_kwargs = pwlu_kwargs

    def __call__(
        self,
        num_channels: int,
        channel_dim: int = 1,
        inplace: bool = True,
        norm: nn.Module | None = None,
        spatial: bool = True,
    ) -> nn.Module:
        """A new activation module for inputs with ``num_channels`` channels in ``channel_dim``.

        ``inplace``: ReLU and Swish may overwrite their input (as Detectron2's ``F.relu_``);
        pass False where the caller still uses the input afterwards. The others never do.
        ``norm``: the site's normalisation layer before the activation (None: it has none).
        ``spatial``: False where the input is a vector ``(N, C)`` or an ``(N, C, 1, 1)`` map.
        Only FReLU uses ``norm`` and ``spatial`` (:meth:`pwlu_det.layers.FReLU.from_site`).
        """
        return create_activation(
            self.name,
            None if self.layer_wise_pwlu else num_channels,
            channel_dim=channel_dim,
            inplace=inplace,
            norm=norm,
            spatial=spatial,
            **self.pwlu_kwargs,
        )

    def __repr__(self) -> str:
        return f"ActivationFactory({self.name!r})"


RELU = ActivationFactory("ReLU")  # Detectron2's activation: the default of every head


def activation_factory(cfg: CfgNode, part: str) -> Callable[..., nn.Module]:
    """The activation factory of a model part, from ``MODEL.ACTIVATION`` and ``MODEL.PWLU``.

    Args:
        cfg: a config with :func:`pwlu_det.add_pwlu_config` keys.
        part: ``"backbone"`` (ResNet and FPN) or ``"head"`` (RPN, box, mask, RetinaNet heads).
            With ``MODEL.ACTIVATION.SCOPE == "backbone"`` the heads keep ReLU.
    """
    if part not in ("backbone", "head"):
        raise ValueError(f"part must be 'backbone' or 'head', got {part!r}")
    name = cfg.MODEL.ACTIVATION.NAME
    if part == "head" and cfg.MODEL.ACTIVATION.SCOPE == "backbone":
        name = "ReLU"
    p = cfg.MODEL.PWLU
    return ActivationFactory(
        name,
        channel_wise=p.GRANULARITY == "channel",
        num_intervals=p.NUM_INTERVALS,
        momentum=p.MOMENTUM,
        bound_std=p.BOUND_STD,
        init_bound=p.INIT_BOUND,
        min_width=p.MIN_WIDTH,
        init_shape=p.INIT_SHAPE,
    )


class HeadActivationMixin:
    """Adds ``activation=activation_factory(cfg, "head")`` to a head's ``from_config``.

    Put it first among the bases of a Detectron2 head subclass whose ``__init__`` takes an
    ``activation`` argument.
    """

    @classmethod
    def from_config(cls, cfg, *args, **kwargs):
        ret = super().from_config(cfg, *args, **kwargs)
        ret["activation"] = activation_factory(cfg, "head")
        return ret

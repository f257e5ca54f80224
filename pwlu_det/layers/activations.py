"""The activation layers a config can name, as a name -> class registry (as timm's
``create_act``): config validation reads the names from it, and :func:`create_activation`
builds from it."""

from __future__ import annotations

from torch import nn

from .pwlu_module import PWLU

__all__ = ["ACTIVATION_LAYERS", "create_activation", "get_activation_layer"]

#: ``MODEL.ACTIVATION.NAME`` -> the module class. "Swish" and "SiLU" are the same function.
ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "PWLU": PWLU,
    "Swish": nn.SiLU,
    "SiLU": nn.SiLU,
    "ReLU": nn.ReLU,
}


def get_activation_layer(name: str) -> type[nn.Module]:
    """The class registered as ``name``.

    Raises:
        ValueError: ``name`` is not in :data:`ACTIVATION_LAYERS`.
    """
    if name not in ACTIVATION_LAYERS:
        raise ValueError(f"unknown activation {name!r}: expected one of {tuple(ACTIVATION_LAYERS)}")
    return ACTIVATION_LAYERS[name]


def create_activation(
    name: str,
    num_channels: int | None,
    channel_dim: int = 1,
    inplace: bool = True,
    **pwlu_kwargs,
) -> nn.Module:
    """A new activation module of the class registered as ``name``.

    Args:
        name: a key of :data:`ACTIVATION_LAYERS`.
        num_channels: a PWLU's channels (None: one layer-wise unit); unused by the others.
        channel_dim: a PWLU's channel dimension.
        inplace: whether ReLU and SiLU may overwrite their input; a PWLU never does.
        pwlu_kwargs: further :class:`PWLU` arguments.

    Raises:
        ValueError: an unknown ``name``.
    """
    layer = get_activation_layer(name)
    if issubclass(layer, PWLU):
        return layer(num_channels, channel_dim=channel_dim, **pwlu_kwargs)
    return layer(inplace=inplace)

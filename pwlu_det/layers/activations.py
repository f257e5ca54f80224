"""The activation layers a config can name, as a name -> class registry (as timm's
``create_act``): config validation reads the names from it, and :func:`create_activation`
builds from it."""

from __future__ import annotations

from torch import nn

from .learned_activations import ACONC, PAU, ActivationSite, FReLU, LearnedActivation, PReLU
from .pwlu_module import PWLU

__all__ = ["ACTIVATION_LAYERS", "create_activation", "get_activation_layer"]

#: ``MODEL.ACTIVATION.NAME`` -> the module class. "Swish" and "SiLU" are the same function;
#: PReLU, ACON-C, FReLU and PAU are the learned baselines (:mod:`.learned_activations`).
ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "PWLU": PWLU,
    "Swish": nn.SiLU,
    "SiLU": nn.SiLU,
    "ReLU": nn.ReLU,
    "PReLU": PReLU,
    "ACON-C": ACONC,
    "FReLU": FReLU,
    "PAU": PAU,
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
    norm: nn.Module | None = None,
    spatial: bool = True,
    **pwlu_kwargs,
) -> nn.Module:
    """A new activation module of the class registered as ``name``.

    Args:
        name: a key of :data:`ACTIVATION_LAYERS`.
        num_channels: the channels of a PWLU or a learned activation (None: one set of
            parameters for the layer); unused by ReLU and SiLU.
        channel_dim: their channel dimension.
        inplace: whether ReLU and SiLU may overwrite their input; the others never do.
        norm: the site's normalisation layer, or None (only FReLU uses it).
        spatial: whether the site's input has a spatial extent (only FReLU uses it; see
            :class:`ActivationSite`).
        pwlu_kwargs: further :class:`PWLU` arguments.

    Raises:
        ValueError: an unknown ``name``.
    """
    layer = get_activation_layer(name)
    if issubclass(layer, PWLU):
        return layer(num_channels, channel_dim=channel_dim, **pwlu_kwargs)
    if issubclass(layer, LearnedActivation):
        return layer.from_site(ActivationSite(num_channels, channel_dim, norm, spatial))
    return layer(inplace=inplace)

"""The learned activations PWLU is compared with: PReLU, ACON-C, FReLU and PAU, in plain PyTorch.

Each is built for an activation site by :meth:`LearnedActivation.from_site`, from what the site
offers (:class:`ActivationSite`): its channel count and channel dimension, its normalisation
layer (the one before the activation, if any) and whether its input has a spatial extent. Only
standard ops are used, so every one of them scripts, traces and exports to ONNX as it is: none
needs a deployed form.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACONC", "PAU", "ActivationSite", "FReLU", "LearnedActivation", "PReLU"]


def _per_channel(param: torch.Tensor, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``param`` (C or 1 values) shaped to broadcast along ``channel_dim`` of ``x``."""
    trailing = x.dim() - 1 - channel_dim % x.dim()
    return param.reshape([param.shape[0]] + [1] * trailing)


@dataclass(frozen=True)
class ActivationSite:
    """What an activation site offers the activation built for it.

    Attributes:
        num_channels: channels of the site's input (None: one set of parameters shared by all
            channels).
        channel_dim: the channel dimension of the input.
        norm: the site's normalisation layer (the one right before the activation), or None.
        spatial: False where the input has no spatial extent: a vector ``(N, C)`` after a fully
            connected layer, or an ``(N, C, 1, 1)`` map.
    """

    num_channels: int | None
    channel_dim: int = 1
    norm: nn.Module | None = None
    spatial: bool = True


class LearnedActivation(nn.Module):
    """Base of the learned activations: :meth:`from_site` builds one for a site.

    Subclasses override it when they need more (FReLU) or less (PAU) than the channel count
    and channel dimension.
    """

    @classmethod
    def from_site(cls, site: ActivationSite) -> LearnedActivation:
        """The activation for ``site``."""
        return cls(site.num_channels, channel_dim=site.channel_dim)


class _ChannelWise(LearnedActivation):
    """Holds ``num_channels`` (C, or None for one shared set) and ``channel_dim``."""

    def __init__(self, num_channels: int | None, channel_dim: int = 1):
        super().__init__()
        if num_channels is not None and num_channels < 1:
            raise ValueError(
                f"{type(self).__name__}: num_channels must be None or >= 1, got {num_channels}"
            )
        self.num_channels = num_channels
        self.channel_dim = channel_dim

    def _init(self, value: float) -> nn.Parameter:
        """A parameter of one value per channel (one in all if ``num_channels`` is None)."""
        return nn.Parameter(torch.full((self.num_channels or 1,), float(value)))

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, channel_dim={self.channel_dim}"


class PReLU(_ChannelWise):
    """Parametric ReLU, channel-wise: ``f(x) = max(x, 0) + a * min(x, 0)``.

    He et al., "Delving Deep into Rectifiers: Surpassing Human-Level Performance on ImageNet
    Classification", ICCV 2015. Initialisation: ``a = 0.25`` (the paper's). Parameter:
    ``weight`` (as :class:`torch.nn.PReLU`), one per channel of ``channel_dim``.
    """

    def __init__(self, num_channels: int | None, channel_dim: int = 1, init: float = 0.25):
        super().__init__(num_channels, channel_dim)
        self.weight = self._init(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``, same shape as ``x``."""
        return F.relu(x) - _per_channel(self.weight, x, self.channel_dim) * F.relu(-x)


class ACONC(_ChannelWise):
    """ACON-C, channel-wise: ``f(x) = (p1 - p2) * x * sigmoid(beta * (p1 - p2) * x) + p2 * x``.

    Ma et al., "Activate or Not: Learning Customized Activation", CVPR 2021. Parameters
    ``p1``, ``p2`` and ``beta``, one of each per channel of ``channel_dim``. Initialisation:
    ``p1 = 1, p2 = 0, beta = 1``, where ACON-C is exactly Swish, ``x * sigmoid(x)``: the
    comparison starts it where the Swish row and PWLU's Swish start are (the authors' code
    draws ``p1`` and ``p2`` from N(0, 1) instead).
    """

    def __init__(self, num_channels: int | None, channel_dim: int = 1):
        super().__init__(num_channels, channel_dim)
        self.p1 = self._init(1.0)
        self.p2 = self._init(0.0)
        self.beta = self._init(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``, same shape as ``x``."""
        p2 = _per_channel(self.p2, x, self.channel_dim)
        dx = (_per_channel(self.p1, x, self.channel_dim) - p2) * x
        return dx * torch.sigmoid(_per_channel(self.beta, x, self.channel_dim) * dx) + p2 * x


class FReLU(LearnedActivation):
    """Funnel ReLU: ``f(x) = max(x, T(x))``, with ``T`` a depthwise convolution and a norm.

    Ma et al., "Funnel Activation for Visual Recognition", ECCV 2020. ``T`` is the paper's
    "parametric pooling window": a depthwise ``kernel_size`` x ``kernel_size`` convolution
    (stride 1, same padding), followed by a fresh copy of the site's norm (same type, groups
    and eps; BN in the paper). Initialisation: PyTorch's defaults, as the authors' code.

    ``T`` follows the site's normalisation. At a site without a norm (Detectron2's RPN head,
    P6->P7, the mask head's deconvolution, a RetinaNet head with ``NORM ""``, the box head's
    fully connected layers) it has none either, and its convolution has a bias: a BN there
    would normalise where the compared models do not (and, in the RPN and RetinaNet heads,
    mix the statistics of all FPN levels). The convolution has no bias only where the norm
    learns one, as Detectron2's ``bias=not norm``; FrozenBN learns none, and its copy starts
    as the identity.

    A site without spatial extent (``spatial=False``: the box head's fully connected layers,
    RegNetY's squeeze-and-excitation) gets a 1x1 window (the paper's k x k window, k = 1): on a
    vector, read as a 1x1 map, a zero-padded 3x3 window would see only its centre anyway. There
    ``T`` is a per-channel affine map, ``f(x) = max(x, w * x + b)``.

    Args:
        num_channels: the channels C of the input, in dim 1.
        norm: the site's normalisation layer over C channels (copied and reset), or None.
        kernel_size: the window size (odd).
    """

    def __init__(self, num_channels: int, norm: nn.Module | None = None, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"FReLU: kernel_size must be odd, got {kernel_size}")
        norm_channels = getattr(norm, "num_features", getattr(norm, "num_channels", num_channels))
        if norm_channels != num_channels:
            raise ValueError(
                f"FReLU: the norm {norm} is for {norm_channels} channels, not {num_channels}"
            )
        if norm is not None:
            norm = copy.deepcopy(norm)
            if hasattr(norm, "reset_parameters"):
                norm.reset_parameters()
        self.conv = nn.Conv2d(
            num_channels,
            num_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=num_channels,
            bias=norm is None or not any(True for _ in norm.parameters()),
        )
        self.norm = norm

    @classmethod
    def from_site(cls, site: ActivationSite) -> FReLU:
        """The site's FReLU: a 3x3 window with the site's norm, or a 1x1 window without
        spatial extent.

        Raises:
            ValueError: no channel count, or channels not in dim 1 (a convolution's layout).
        """
        if site.num_channels is None or site.channel_dim != 1:
            raise ValueError(
                "FReLU: needs the channel count and channels in dim 1, got "
                f"num_channels={site.num_channels}, channel_dim={site.channel_dim}"
            )
        return cls(site.num_channels, norm=site.norm, kernel_size=3 if site.spatial else 1)

    def funnel(self, x: torch.Tensor) -> torch.Tensor:
        """``T(x)`` of an ``(N, C, H, W)`` map."""
        y = self.conv(x)
        if self.norm is not None:
            y = self.norm(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` of an ``(N, C, H, W)`` map, or of an ``(N, C)`` vector read as a 1x1 map."""
        if x.dim() == 2:
            return torch.maximum(x, self.funnel(x[:, :, None, None]).flatten(1))
        return torch.maximum(x, self.funnel(x))


#: The authors' initialisation of a degree-5/4 PAU: the coefficients of their
#: "pade_optimized_leakyrelu" (ml-research/pau, pau/cuda/python_imp/Pade.py, the default of
#: their ``PAU()`` in pau/utils.py), fitted to Leaky ReLU (slope 0.01).
PAU_LEAKY_RELU_INIT = (
    (3.35583603e-02, 5.05000375e-01, 1.65343934e00, 2.01001052e00, 9.31901999e-01, 1.52424124e-01),
    (3.30847488e-06, 3.98021568e00, 5.12471206e-07, 3.01830109e-01),
)


class PAU(LearnedActivation):
    """Padé Activation Unit, safe form, one per layer: ``f(x) = P(x) / Q(x)`` with

    ``P(x) = a_0 + a_1 x + ... + a_5 x^5`` and ``Q(x) = 1 + |b_1| |x| + ... + |b_4| |x|^4``.

    Molina, Schramowski and Kersting, "Padé Activation Units: End-to-end Learning of Flexible
    Activation Functions in Deep Networks", ICLR 2020. ``Q >= 1``, so the unit has no poles.
    This ``Q`` is the paper's safe PAU and that of the authors' released kernels
    (github.com/ml-research/pau, behind their ``PAU()``); the other safe form,
    ``1 + |b_1 x + ... + b_4 x^4|``, is not used.
    Parameters ``numerator`` (a_0..a_5) and ``denominator`` (b_1..b_4), shared by all channels.
    Initialisation: the authors' Leaky ReLU fit, :data:`PAU_LEAKY_RELU_INIT` (within 0.034 of
    Leaky ReLU on [-3, 3]; slope a_5 / b_4 = 0.505 far out on both sides).

    The input's fifth power overflows in float16 beyond |x| of about 9: run it in float32.
    """

    def __init__(self):
        super().__init__()
        numerator, denominator = PAU_LEAKY_RELU_INIT
        self.numerator = nn.Parameter(torch.tensor(numerator))
        self.denominator = nn.Parameter(torch.tensor(denominator))

    @classmethod
    def from_site(cls, site: ActivationSite) -> PAU:
        """One PAU for the site's layer, whatever its channels."""
        return cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``, same shape as ``x`` (both polynomials by Horner's rule)."""
        a, b = self.numerator, self.denominator.abs()
        numerator = a[-1] * x
        for k in range(a.shape[0] - 2, 0, -1):
            numerator = (numerator + a[k]) * x
        ax = x.abs()
        denominator = b[-1] * ax
        for k in range(b.shape[0] - 2, -1, -1):
            denominator = (denominator + b[k]) * ax
        return (numerator + a[0]) / (denominator + 1)

"""The Swish twin of mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ_pwlu.py.

It differs only in pwlu.ACTIVATION.NAME.
"""

from .mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ_pwlu import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    pwlu,
    train,
)

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "pwlu", "train"]

pwlu.ACTIVATION.NAME = "Swish"

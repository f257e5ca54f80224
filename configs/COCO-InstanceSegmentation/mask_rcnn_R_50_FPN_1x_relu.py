"""The ReLU twin of mask_rcnn_R_50_FPN_1x_pwlu.py.

It differs only in pwlu.ACTIVATION.NAME.
"""

from .mask_rcnn_R_50_FPN_1x_pwlu import dataloader, lr_multiplier, model, optimizer, pwlu, train

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "pwlu", "train"]

pwlu.ACTIVATION.NAME = "ReLU"

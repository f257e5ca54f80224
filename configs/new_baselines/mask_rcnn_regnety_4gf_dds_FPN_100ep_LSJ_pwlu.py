"""Detectron2's new_baselines recipe mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ (RegNetY-4GF FPN,
from scratch, LSJ, 100 epochs) with PWLU, channel-wise, in the RegNet stem and blocks
(pwlu_det.modeling.ActRegNet) and in the heads, with the PWLU options of
mask_rcnn_R_50_FPN_100ep_LSJ_pwlu.py.
The SE modules keep ReLU: see pwlu_det/modeling/regnet.py for why.
"""

from detectron2.model_zoo import get_config

from pwlu_det.lazy import with_activation

from .mask_rcnn_R_50_FPN_100ep_LSJ_pwlu import dataloader, lr_multiplier, optimizer, pwlu, train

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "pwlu", "train"]

# As Detectron2's own RegNet LSJ configs: the R50 recipe with another backbone.
_recipe = get_config("new_baselines/mask_rcnn_regnety_4gf_dds_FPN_100ep_LSJ.py")
model = with_activation(_recipe.model)
train.cudnn_benchmark = _recipe.train.cudnn_benchmark

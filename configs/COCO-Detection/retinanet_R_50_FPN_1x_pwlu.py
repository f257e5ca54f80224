"""Detectron2's retinanet_R_50_FPN_1x LazyConfig recipe (batch 16, 90k iterations, LR 0.01,
ImageNet R-50) with PWLU in the backbone (P6->P7 included) and both head subnets: the lazy twin
of retinanet_R_50_FPN_1x_pwlu.yaml, with the same PWLU options."""

from detectron2.model_zoo import get_config

from pwlu_det.lazy import pwlu_options, with_activation

_recipe = get_config("COCO-Detection/retinanet_R_50_FPN_1x.py")
dataloader = _recipe.dataloader
lr_multiplier = _recipe.lr_multiplier
optimizer = _recipe.optimizer
train = _recipe.train
model = with_activation(_recipe.model)
# The rest are the defaults: N = 16, channel-wise, "paper" realignment. The settings and their
# measurements on the CPU proxy: the yaml twin's comments.
pwlu = pwlu_options(
    NAME="PWLU",
    STATISTICS_ITERS=4500,
    INIT_SHAPE="swish",
    LEARN_IN_FROZEN_STAGES=True,
    LR_FACTOR=100.0,
)

"""Detectron2's mask_rcnn_R_50_FPN_1x LazyConfig recipe (batch 16, 90k iterations, LR 0.02, steps
60k/80k, ImageNet R-50) with PWLU in the backbone and heads: the lazy twin of
mask_rcnn_R_50_FPN_1x_pwlu.yaml, with the same PWLU options (its comments give the reasons).

    tools/lazyconfig_train_net.py --num-gpus 8 \\
        --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_pwlu.py
"""

from detectron2.model_zoo import get_config

from pwlu_det.lazy import pwlu_options, with_activation

_recipe = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
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

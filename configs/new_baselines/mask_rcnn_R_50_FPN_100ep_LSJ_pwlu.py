"""Detectron2's new_baselines recipe mask_rcnn_R_50_FPN_100ep_LSJ (from scratch, SyncBN, large
scale jitter at 1024, batch 64, 184375 iterations = 100 epochs, AMP) with PWLU in the backbone
and heads (RPN 2 convs, box head 4 convs + 1 fc, mask head).

PWLU options, none measured on COCO:
- STATISTICS_ITERS 9219: Phase I is 5% of the schedule, 5 of the 100 epochs (the paper: 5
  ImageNet epochs), well after the 500-iteration warm-up;
- INIT_SHAPE swish: the network trains from scratch, where on Shapes a Swish start beat the
  paper's ReLU start by 9.5 box AP (configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml);
- LR_FACTOR 10: for the parameter-scale reason measured on Shapes (tools/pwlu_dynamics.py).
"""

from detectron2.model_zoo import get_config

from pwlu_det.lazy import pwlu_options, with_activation

_recipe = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader = _recipe.dataloader
lr_multiplier = _recipe.lr_multiplier
optimizer = _recipe.optimizer
train = _recipe.train
model = with_activation(_recipe.model)
pwlu = pwlu_options(NAME="PWLU", STATISTICS_ITERS=9219, INIT_SHAPE="swish", LR_FACTOR=10.0)

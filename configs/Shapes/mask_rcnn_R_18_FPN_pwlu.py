"""The demo model as a LazyConfig: configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml (Mask R-CNN R18-FPN,
GroupNorm, from scratch on the embedded shapes dataset, batch 2, 820 iterations; PWLU
channel-wise, N = 16, Swish start, LR_FACTOR 10), built from Detectron2's lazy Mask R-CNN. The
yaml's comments give the reasons for every value; tests/test_lazy_configs.py checks that both
build the same network.

    tools/lazyconfig_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.py
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from pwlu_det.lazy import pwlu_options, with_activation

_zoo = "common/models/mask_rcnn_fpn.py", "common/data/coco.py", "common/optim.py", "common/train.py"
model = get_config(_zoo[0]).model
dataloader = get_config(_zoo[1]).dataloader
optimizer = get_config(_zoo[2]).SGD
train = get_config(_zoo[3]).train

# Model: R18, GroupNorm everywhere, FPN 64 channels, 4conv1fc GN box head, GN mask head.
_resnet = model.backbone.bottom_up
_resnet.stem.norm = "GN"
_resnet.stages.depth = 18
_resnet.stages.norm = "GN"
del _resnet.stages.stride_in_1x1  # BasicBlock has no 1x1 conv
_resnet.freeze_at = 0
model.backbone.norm = "GN"
model.backbone.out_channels = 64
model.proposal_generator.head.in_channels = 64
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 250)
model.roi_heads.num_classes = 4
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
model.roi_heads.box_head.conv_dims = [64, 64, 64, 64]
model.roi_heads.box_head.fc_dims = [512]
model.roi_heads.box_head.conv_norm = "GN"
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=512)
model.roi_heads.box_predictor.test_topk_per_image = 50
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=64, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [64, 64, 64, 64, 64]
model.roi_heads.mask_head.conv_norm = "GN"
model = with_activation(model)

# Data: shapes_train / shapes_val at 256 x 256, horizontal flips, batch 2.
dataloader.train.dataset.names = "shapes_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(256,), sample_style="choice", max_size=256),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 1
dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=256, max_size=256)
]
dataloader.test.num_workers = 1

# Schedule: LR 0.04, 100 warm-up iterations, steps at 631 and 754 of 820.
optimizer.lr = 0.04
train.max_iter = 820
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[631, 754], num_updates=train.max_iter
    ),
    warmup_length=100 / train.max_iter,
    warmup_factor=0.001,
)
train.checkpointer.period = 205
train.eval_period = 0  # once, at the end
train.device = "cpu"
train.seed = 0
train.output_dir = "output/lazy_shapes_mask_rcnn_R_18_FPN_pwlu"

pwlu = pwlu_options(NAME="PWLU", STATISTICS_ITERS=82, INIT_SHAPE="swish", LR_FACTOR=10.0)

#!/usr/bin/env python
"""Train and evaluate PWLU / Swish / ReLU detectors with Detectron2.

Examples::

    tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml
    tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml --resume
    tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml \\
        --eval-only MODEL.WEIGHTS output/shapes_mask_rcnn_R_18_FPN_pwlu/model_final.pth
    tools/train_net.py --num-gpus 2 --config-file ...   # 2 processes (CPU: gloo)
"""

from pwlu_det.engine import launch
from pwlu_det.engine.cli import argument_parser, main

if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )

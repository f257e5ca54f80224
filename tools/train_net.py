#!/usr/bin/env python
"""Train and evaluate PWLU / Swish / ReLU detectors with Detectron2.

Examples::

    tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml
    tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml --resume
    tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml \\
        --eval-only MODEL.WEIGHTS output/shapes_mask_rcnn_R_18_FPN_pwlu/model_final.pth
    tools/train_net.py --num-gpus 2 --config-file ...   # 2 processes (CPU: gloo)
"""

from pwlu_det.engine.cli import run

if __name__ == "__main__":
    run()

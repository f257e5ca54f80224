#!/usr/bin/env python
"""Train and evaluate PWLU / Swish / ReLU detectors from LazyConfig python configs.

Examples::

    tools/lazyconfig_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.py
    tools/lazyconfig_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.py --resume
    tools/lazyconfig_train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.py \\
        --eval-only train.init_checkpoint=output/lazy_shapes_mask_rcnn_R_18_FPN_pwlu/model_final.pth
    tools/lazyconfig_train_net.py --num-gpus 8 \\
        --config-file configs/new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ_pwlu.py \\
        pwlu.PWLU.STATISTICS_ITERS=9000
"""

from pwlu_det.engine.lazy_cli import run

if __name__ == "__main__":
    run()

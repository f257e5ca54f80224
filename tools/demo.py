#!/usr/bin/env python
"""``make demo``: PWLU Mask R-CNN on the embedded shapes dataset, trained and evaluated on CPU.

Generates the dataset if absent (datasets/shapes, or $DETECTRON2_DATASETS/shapes), trains
configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml (a finished run in its OUTPUT_DIR is reused; an
interrupted one is resumed), evaluates COCO box and mask AP on shapes_val and prints them,
draws the predictions and the learned PWLU curves, and compares the AP with the documented
figures. Extra arguments are config overrides, e.g. ``SOLVER.MAX_ITER 100`` (``--help``).
``python -m pwlu_det.engine.demo`` is the same command, for an installed pwlu_det.
"""

from pwlu_det.engine.demo import main

if __name__ == "__main__":
    main()

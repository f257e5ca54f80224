#!/usr/bin/env python
"""``make demo``: PWLU Mask R-CNN on the embedded shapes dataset, trained and evaluated on CPU.

Generates the dataset if absent (datasets/shapes, or $DETECTRON2_DATASETS/shapes), trains
configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml (a finished run in its OUTPUT_DIR is reused; an
interrupted one is resumed), evaluates COCO box and mask AP on shapes_val and prints them.
Extra arguments are config overrides, e.g. ``SOLVER.MAX_ITER 100``.
"""

import sys

from pwlu_det.engine.demo import (
    DEFAULT_DEMO_CONFIG,
    describe_outputs,
    format_ap_table,
    run_demo,
)

if __name__ == "__main__":
    outcome = run_demo(DEFAULT_DEMO_CONFIG, sys.argv[1:])
    print(
        f"\nPWLU Mask R-CNN R18-FPN on shapes_val ({DEFAULT_DEMO_CONFIG}), "
        f"{outcome['seconds'] / 60:.1f} min:"
    )
    print(format_ap_table(outcome["results"]))
    print(
        f"\nOutputs in {outcome['output_dir']}: "
        + ", ".join(describe_outputs(outcome["output_dir"]))
    )

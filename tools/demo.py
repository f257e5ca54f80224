#!/usr/bin/env python
"""``make demo``: PWLU Mask R-CNN on the embedded shapes dataset, trained and evaluated on CPU.

Generates the dataset if absent (datasets/shapes, or $DETECTRON2_DATASETS/shapes), trains
configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml (a finished run in its OUTPUT_DIR is reused; an
interrupted one is resumed), evaluates COCO box and mask AP on shapes_val and prints them,
draws the predictions and the learned PWLU curves, and compares the AP with the documented
figures. Extra arguments are config overrides, e.g. ``SOLVER.MAX_ITER 100`` (``--help``).
"""

from pwlu_det.config import load_pwlu_config
from pwlu_det.engine.demo import (
    DEFAULT_DEMO_CONFIG,
    compare_with_documented,
    describe_outputs,
    format_ap_table,
    parse_demo_args,
    run_demo,
    write_demo_pictures,
)

if __name__ == "__main__":
    opts = parse_demo_args().opts
    outcome = run_demo(DEFAULT_DEMO_CONFIG, opts)
    print(
        f"\nPWLU Mask R-CNN R18-FPN on shapes_val ({DEFAULT_DEMO_CONFIG}), "
        f"{outcome['seconds'] / 60:.1f} min:"
    )
    print(format_ap_table(outcome["results"]))
    if opts:
        print("\nConfig overrides given: not compared with the documented figures.")
    else:
        seed = load_pwlu_config(DEFAULT_DEMO_CONFIG).SEED
        _, message = compare_with_documented(outcome["results"], DEFAULT_DEMO_CONFIG, seed)
        print(f"\nAP {message}")
    print(
        f"\nOutputs in {outcome['output_dir']}: "
        + ", ".join(describe_outputs(outcome["output_dir"]))
    )
    print("Pictures:")
    for path in write_demo_pictures(DEFAULT_DEMO_CONFIG, opts):
        print(f"  {path}")

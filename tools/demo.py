#!/usr/bin/env python
"""``make demo``: the main job on the embedded default.

Until the PWLU detectors and the embedded dataset land, this is a smoke run: Mask R-CNN and
RetinaNet R50-FPN from Detectron2's bundled configs (random weights, GroupNorm) train a few SGD
steps on one synthetic batch on the CPU, then run inference. It prints the measured losses.
"""

import argparse
import logging

from pwlu_det.engine import run_smoke_training

CONFIGS = (
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5, help="SGD steps per model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        f"Smoke run: {args.iterations} SGD steps per model on a synthetic batch of two "
        "128x160 images (3 classes, polygon masks), CPU, random initialisation."
    )
    for config in CONFIGS:
        result = run_smoke_training(config, iterations=args.iterations)
        losses = " -> ".join(f"{loss:.3f}" for loss in result.losses)
        print(
            f"{config}\n  total loss per step: {losses}\n"
            f"  {result.seconds_per_iter:.2f} s/step; inference: "
            f"{result.num_predictions} instances per image above the default score threshold"
        )
    print(
        "Not yet a PWLU result: PWLU detectors and COCO AP on the embedded dataset come with "
        "the 'PWLU detectors' issue."
    )


if __name__ == "__main__":
    main()

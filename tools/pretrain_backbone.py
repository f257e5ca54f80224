#!/usr/bin/env python
"""Pretrain a detector's ReLU ResNet with BatchNorm on embedded classification data (ImageNet-like).

Example (the documented run; its backbone is what configs/ShapesPretrained/*.yaml load)::

    tools/pretrain_backbone.py

The ResNet is the one ``--config-file`` builds. The run writes checkpoints, ``log.txt`` and
``metrics.json`` to ``--output-dir``, shows progress with an ETA, and at the end reports the
held-out accuracy and writes the backbone as a Detectron2 ``.pkl`` (``R-<depth>.pkl``) and
``pretrain_result.json``. Run the same command again to resume an interrupted run (from its
last checkpoint; same bits as an uninterrupted run on the same machine). The data is generated
once and cached under ``--data-root``. The logic is in :mod:`pwlu_det.engine.pretrain` and
:mod:`pwlu_det.data.classification`.
"""

import argparse
import json

from detectron2.utils.logger import setup_logger

from pwlu_det.data.classification import default_classification_root
from pwlu_det.engine.pretrain import RESULT_FILE, PretrainOptions, pretrain_backbone
from pwlu_det.utils.user_errors import add_debug_argument, exit_on_user_error

# Command-line flag -> PretrainOptions field (the defaults and help come from there).
_FLAGS = {
    "--config-file": ("config_file", "detection config whose ResNet is pretrained"),
    "--output-dir": ("output_dir", "checkpoints, log, backbone .pkl and result"),
    "--data-root": ("data_root", f"dataset cache (default: {default_classification_root()})"),
    "--image-size": ("image_size", "image side in pixels"),
    "--train-per-class": ("train_per_class", "training images per class"),
    "--val-per-class": ("val_per_class", "held-out images per class"),
    "--iters": ("max_iter", "training iterations"),
    "--batch-size": ("batch_size", "images per iteration"),
    "--lr": ("base_lr", "SGD learning rate after the warm-up (cosine decay)"),
    "--warmup-iters": ("warmup_iters", "linear warm-up iterations"),
    "--checkpoint-period": ("checkpoint_period", "iterations between checkpoints"),
    "--seed": ("seed", "initialisation and data order"),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = PretrainOptions()
    for flag, (name, text) in _FLAGS.items():
        default = getattr(defaults, name)
        suffix = "" if default is None else f" (default: {default})"
        kind = str if default is None else type(default)
        parser.add_argument(flag, dest=name, type=kind, default=default, help=text + suffix)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    options = PretrainOptions(**{name: getattr(args, name) for name, _ in _FLAGS.values()})

    setup_logger(options.output_dir)  # Detectron2's (training progress)
    setup_logger(options.output_dir, name="pwlu_det")
    result = exit_on_user_error(lambda: pretrain_backbone(options), debug=args.debug)
    print(
        f"held-out accuracy: top-1 {result['heldout_top1']:.2f}%, "
        f"top-5 {result['heldout_top5']:.2f}% "
        f"({result['heldout_images']} images, {result['classes']} classes); "
        f"{result['wall_minutes']:.1f} min"
    )
    print(
        f"backbone: {result['weights']} (MODEL.WEIGHTS); result: {options.output_dir}/{RESULT_FILE}"
    )
    print(json.dumps(result["machine"]))
    return result


if __name__ == "__main__":
    main()

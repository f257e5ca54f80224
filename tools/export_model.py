#!/usr/bin/env python
"""Export a trained detector to TorchScript or ONNX and check it against PyTorch.

Example::

    tools/export_model.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_pwlu.yaml \\
        --format onnx --export-method tracing --output output/export \\
        MODEL.WEIGHTS output/shapes_mask_rcnn_R_18_FPN_pwlu/model_final.pth

The exported model runs on the sample image (``--sample-image``, default: the first image of
shapes_val) and its boxes, scores, classes and masks are compared with the PyTorch model's; a
mismatch is an error (exit status 1).

PWLUs export as standard ops. ``--pwlu-op fused`` (traced TorchScript only) records the fused
C++ op instead: about as fast as Swish on CPU, but loading the file needs ``import pwlu_det``
before ``torch.jit.load``, and it runs on CPU only.
"""

import argparse
import os
import sys

import cv2
import torch

from pwlu_det.data import ensure_shapes_dataset
from pwlu_det.export import (
    ExportMismatchError,
    check_export_request,
    export_model,
    load_model_for_export,
)
from pwlu_det.utils.user_errors import USAGE, UserError, add_debug_argument, exit_on_user_error


def sample_image(path: str | None) -> torch.Tensor:
    if path is None:
        folder = ensure_shapes_dataset(splits=("shapes_val",)) / "val"
        path = str(sorted(folder.iterdir())[0])
    image = cv2.imread(path, cv2.IMREAD_COLOR)  # BGR, as Detectron2 models expect by default
    if image is None:
        raise UserError(f"cannot read the sample image {path}", USAGE)
    return torch.as_tensor(image.transpose(2, 0, 1).copy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    parser.add_argument("--export-method", choices=["tracing", "scripting"], default="tracing")
    parser.add_argument(
        "--pwlu-op",
        choices=["standard", "fused"],
        default="standard",
        help="PWLUs as standard ops, or as pwlu_det's C++ op (traced TorchScript, CPU)",
    )
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--sample-image", default=None, help="image file used for the check")
    add_debug_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    return exit_on_user_error(lambda: export(args), debug=args.debug)


def export(args: argparse.Namespace) -> int:
    """Check the request, load the model, export it and compare; returns the exit status."""
    check_export_request(args.format, args.export_method, args.pwlu_op)
    if args.sample_image is not None and not os.path.isfile(args.sample_image):
        raise UserError(f"sample image not found: {args.sample_image}", USAGE)
    model, _ = load_model_for_export(args.config_file, args.opts)
    try:
        result = export_model(
            model,
            sample_image(args.sample_image),
            args.output,
            args.format,
            args.export_method,
            args.pwlu_op,
        )
    except ExportMismatchError as e:
        print(f"export FAILED its check: {e}", file=sys.stderr)
        return 1
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in result.max_abs_diff.items())
    print(
        f"exported {result.format} ({result.method}) to {result.path}; "
        f"{result.num_detections} detections on the sample image match PyTorch "
        f"(max |difference|: {diffs})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Convert a torchvision ResNet checkpoint to a Detectron2 ImageNet .pkl for MODEL.WEIGHTS.

Example::

    tools/convert_torchvision_to_d2.py resnet50-0676ba61.pth output/R-50-torchvision.pkl

The converted backbone computes what the torchvision model computes only with the options
printed at the end (torchvision puts the Bottleneck stride in the 3x3 conv and takes RGB input
normalised by the ImageNet mean and std). The logic is in :mod:`pwlu_det.checkpoint.convert`.
"""

import argparse
import logging

from pwlu_det.checkpoint import (
    TORCHVISION_CONFIG,
    convert_torchvision_resnet,
    load_state_dict,
    save_d2_pkl,
)
from pwlu_det.utils.user_errors import add_debug_argument, exit_on_user_error, user_errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="torchvision ResNet .pth (a state dict)")
    parser.add_argument("output", help="Detectron2 weights file to write (.pkl)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not args.output.endswith(".pkl"):
        parser.error(
            f"{args.output}: the output must end with .pkl (Detectron2 reads by extension)"
        )
    exit_on_user_error(lambda: convert(args), debug=args.debug)


def convert(args: argparse.Namespace) -> None:
    """Convert ``args.input`` to ``args.output`` and print the options to use it with."""
    with user_errors(FileNotFoundError, ValueError):  # missing, damaged, not a ResNet
        weights = convert_torchvision_resnet(load_state_dict(args.input))
    save_d2_pkl(weights, args.output)
    pairs = zip(TORCHVISION_CONFIG[::2], TORCHVISION_CONFIG[1::2], strict=True)
    print(f"Use it with MODEL.WEIGHTS {args.output} and:")
    print("  " + " ".join(f'{key} "{value}"' for key, value in pairs))


if __name__ == "__main__":
    main()

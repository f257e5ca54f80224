#!/usr/bin/env python
"""Plot the learned PWLU curves of a checkpoint as a PNG grid, one panel per PWLU layer.

Example::

    .venv/bin/python tools/plot_activations.py \
        --checkpoint output/shapes_mask_rcnn_R_18_FPN_pwlu/model_final.pth \
        --output output/shapes_mask_rcnn_R_18_FPN_pwlu/pwlu_curves.png

``--residual`` plots f(x) - ReLU(x), which shows the small changes of a short training.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pwlu_det.utils import plot_pwlu_activations
from pwlu_det.utils.user_errors import add_debug_argument, exit_on_user_error, user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .pth checkpoint or state dict")
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--max-layers", type=int, default=None, help="plot the first K layers")
    parser.add_argument("--columns", type=int, default=4, help="panels per row (default 4)")
    parser.add_argument("--dpi", type=float, default=110, help="resolution (default 110)")
    parser.add_argument("--residual", action="store_true", help="plot f(x) - ReLU(x)")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return exit_on_user_error(lambda: plot(args), debug=args.debug)


def plot(args: argparse.Namespace) -> int:
    """Plot as ``args`` say and print what was written; returns the exit status."""
    # a checkpoint that is missing, damaged or without PWLU units, or a bad option
    with user_errors(FileNotFoundError, ValueError):
        result = plot_pwlu_activations(
            args.checkpoint,
            args.output,
            max_layers=args.max_layers,
            columns=args.columns,
            dpi=args.dpi,
            residual=args.residual,
        )
    width, height = result.size_px
    print(
        f"Wrote {result.path} ({width}x{height} px): {result.layers_plotted} of "
        f"{result.layers_total} PWLU layers"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

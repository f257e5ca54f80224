#!/usr/bin/env python
"""Tabulate the PWLU learning dynamics of a training run (``MODEL.PWLU.DYNAMICS_PERIOD > 0``).

For Phase I and Phase II of each run (the split is the run's ``MODEL.PWLU.STATISTICS_ITERS``),
per model part: the median over the measured steps of the gradient RMS and the relative update
of the PWLU heights, bounds and slopes and of the part's conv weights, the heights' update per
interval width, and the last measured distance of the heights from the initial shape.

Example:
    python tools/pwlu_dynamics.py output/shapes_mask_rcnn_R_18_FPN_pwlu
"""

from __future__ import annotations

import argparse
import os

from tabulate import tabulate

from pwlu_det.config import load_pwlu_config
from pwlu_det.engine.dynamics_table import COLUMNS, read_records, summarise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dirs", nargs="+", help="OUTPUT_DIRs of runs with dynamics")
    args = parser.parse_args(argv)
    headers = ["part", *(name for name, _ in COLUMNS), "shape gap (last)"]
    for output_dir in args.output_dirs:
        try:
            records = read_records(output_dir)
        except FileNotFoundError as error:
            parser.error(str(error))
        cfg = load_pwlu_config(os.path.join(output_dir, "config.yaml"))
        split = cfg.MODEL.PWLU.STATISTICS_ITERS
        end = records[-1]["iteration"] + 1 if records else 0
        for title, start, stop in (("Phase I", 0, split), ("Phase II", split, end)):
            rows = summarise(records, start, stop)
            if rows:
                print(f"\n{output_dir}: {title}, iterations [{start}, {stop}), medians")
                print(tabulate(rows, headers=headers, floatfmt=".2e"))


if __name__ == "__main__":
    main()

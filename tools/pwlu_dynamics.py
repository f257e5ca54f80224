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
import json
import os
import statistics
import sys

from tabulate import tabulate

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pwlu_det.config import load_pwlu_config  # noqa: E402
from pwlu_det.engine.dynamics_hook import DYNAMICS_FILE, PARTS  # noqa: E402

COLUMNS = (
    ("elements/unit", "elements_per_unit"),
    ("heights grad", "heights/grad_rms"),
    ("conv grad", "conv/grad_rms"),
    ("heights upd", "heights/rel_update"),
    ("bounds upd", "bounds/rel_update"),
    ("slopes upd", "slopes/rel_update"),
    ("conv upd", "conv/rel_update"),
    ("dY/d per step", "height_update_per_width"),
)


def read_records(output_dir: str) -> list[dict]:
    """The measured steps of a run, the last record of each iteration (a resumed run repeats
    some), in iteration order.

    Raises:
        FileNotFoundError: the run has no dynamics file.
    """
    path = os.path.join(output_dir, DYNAMICS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} does not exist: train with MODEL.PWLU.DYNAMICS_PERIOD > 0 (e.g. 20)"
        )
    by_iteration = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                by_iteration[record["iteration"]] = record
    return [by_iteration[i] for i in sorted(by_iteration)]


def summarise(records: list[dict], start: int, stop: int) -> list[list]:
    """One row per part: medians over the records with ``start <= iteration < stop``."""
    window = [r for r in records if start <= r["iteration"] < stop]
    rows = []
    for part in PARTS:
        row = [part]
        for _, key in COLUMNS:
            values = [r[f"dynamics/{part}/{key}"] for r in window if f"dynamics/{part}/{key}" in r]
            row.append(statistics.median(values) if values else None)
        gaps = [
            r[f"dynamics/{part}/shape_gap"] for r in window if f"dynamics/{part}/shape_gap" in r
        ]
        row.append(gaps[-1] if gaps else None)
        if any(v is not None for v in row[1:]):
            rows.append(row)
    return rows


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

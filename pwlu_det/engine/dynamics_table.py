"""The table of a run's PWLU learning dynamics (``dynamics.jsonl`` of :class:`PWLUDynamicsHook`):
per model part, medians over a window of iterations (``tools/pwlu_dynamics.py`` prints it)."""

from __future__ import annotations

import json
import os
import statistics

from .dynamics_hook import DYNAMICS_FILE, PARTS

__all__ = ["COLUMNS", "read_records", "summarise"]

#: (column title, record key under ``dynamics/<part>/``) of the table.
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

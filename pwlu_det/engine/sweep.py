"""Equal tuning for an activation comparison: one grid of config overrides for every config.

A sweep trains every config at every grid point (``--grid SOLVER.BASE_LR=0.02,0.04,0.08``) on a
tuning test set, never on the held-out one (``shapes_val``), through
:func:`~pwlu_det.engine.compare.compare_activations`, so runs resume and are reused the same way.
Where the two best points of a config are within ``tie_margin`` box AP, both get the extra
``tie_seeds`` too, and so does a point that then leads without them (means over different seeds
do not compare). The best point of each config (highest mean box AP) is then what the final
comparison runs on the config's own test set.

Run folders: ``<work_dir>/sweep/<point>/<config stem>/seed<k>``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pwlu_det.utils.file_io import atomic_write
from pwlu_det.utils.machine import MACHINE_KEYS, describe_machine

from .compare import compare_activations, diverged_count, mean_std, write_rows_csv

__all__ = [
    "HELD_OUT_TEST_SETS",
    "SWEEP_COLUMNS",
    "GridPoint",
    "best_points",
    "check_tuning_test_sets",
    "opts_of_label",
    "parse_grid",
    "run_best_points",
    "run_sweep",
    "write_sweep_reports",
]

logger = logging.getLogger(__name__)

#: Test sets a sweep refuses: they are for the final comparison only.
HELD_OUT_TEST_SETS = ("shapes_val",)
#: Columns of ``sweep.csv``, in order.
SWEEP_COLUMNS = (
    "config",
    "activation",
    "point",
    "seed",
    "bbox_AP",
    "segm_AP",
    "minutes",
    "diverged",
    "config_sha",
    "output_dir",
    *MACHINE_KEYS,
)


@dataclass(frozen=True)
class GridPoint:
    """One setting of the grid: ``((KEY, VALUE), ...)`` config overrides."""

    overrides: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """``KEY=VALUE`` pairs joined by spaces, e.g. ``SOLVER.BASE_LR=0.02``."""
        return " ".join(f"{key}={value}" for key, value in self.overrides)

    @property
    def folder(self) -> str:
        """The point's run folder name, e.g. ``SOLVER.BASE_LR=0.02``."""
        return "__".join(f"{key}={value}" for key, value in self.overrides).replace("/", "_")

    @property
    def opts(self) -> list[str]:
        """Detectron2 ``KEY VALUE`` overrides."""
        return [part for pair in self.overrides for part in pair]


def parse_grid(axes: Sequence[str]) -> list[GridPoint]:
    """The grid points of ``axes``, each ``KEY=V1,V2,...``: their Cartesian product.

    Raises:
        ValueError: an axis without ``=`` or values, a key given twice, a value repeated or
            holding whitespace.
    """
    keys, values = [], []
    for axis in axes:
        key, sep, text = axis.partition("=")
        choices = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not key.strip() or not choices:
            raise ValueError(
                f"grid axis {axis!r}: expected KEY=V1,V2,... e.g. SOLVER.BASE_LR=0.02,0.04"
            )
        if key in keys:
            raise ValueError(f"grid axis {key!r} is given twice")
        if any(c.split() != [c] for c in choices):
            raise ValueError(f"grid axis {key!r}: a value holds whitespace: {choices}")
        if len(set(choices)) != len(choices):
            raise ValueError(f"grid axis {key!r} repeats a value: {choices}")
        keys.append(key.strip())
        values.append(choices)
    if not keys:
        raise ValueError("a grid needs at least one axis, e.g. SOLVER.BASE_LR=0.02,0.04")
    return [GridPoint(tuple(zip(keys, combo, strict=True))) for combo in itertools.product(*values)]


def opts_of_label(label: str) -> list[str]:
    """The ``KEY VALUE`` overrides of a :attr:`GridPoint.label` (as results.csv stores it)."""
    return [part for pair in label.split() for part in pair.split("=", 1)]


def check_tuning_test_sets(
    config_files: Sequence[str], points: Sequence[GridPoint], opts: Sequence[str]
) -> None:
    """Refuse a sweep that would evaluate on a held-out test set (:data:`HELD_OUT_TEST_SETS`).

    Raises:
        ValueError: naming the config, the test set and how to tune on ``shapes_tune``.
    """
    from pwlu_det.config import load_pwlu_config

    for config_file in config_files:
        for point in points:
            cfg = load_pwlu_config(config_file, [*opts, *point.opts])
            held_out = [name for name in cfg.DATASETS.TEST if name in HELD_OUT_TEST_SETS]
            if held_out:
                raise ValueError(
                    f"sweep: {config_file} at {point.label} would be evaluated on "
                    f"{', '.join(held_out)}, which is held out for the final comparison; tune "
                    "on shapes_tune (--tune-set shapes_tune)"
                )


def _sort_key(stats: dict) -> float:
    return -math.inf if math.isnan(stats["bbox_mean"]) else stats["bbox_mean"]


def _point_stats(rows: Sequence[dict]) -> dict[tuple[str, str], dict]:
    """Mean and std of box and mask AP per (config, point label)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["config"], row["point"]), []).append(row)
    stats = {}
    for key, group in groups.items():
        box = mean_std([r["bbox_AP"] if r["bbox_AP"] is not None else math.nan for r in group])
        mask = [r["segm_AP"] for r in group if r["segm_AP"] is not None]
        stats[key] = {
            "bbox_mean": box[0],
            "bbox_std": box[1],
            "segm": mean_std(mask) if mask else (math.nan, math.nan),
            "seeds": sorted(r["seed"] for r in group),
            "activation": group[0]["activation"],
            "diverged": diverged_count(group),
            "finished_bbox": [r["bbox_AP"] for r in group if r["bbox_AP"] is not None],
        }
    return stats


def best_points(rows: Sequence[dict]) -> dict[str, str]:
    """The point label with the highest mean box AP, per config (NaN AP counts as lowest)."""
    best: dict[str, tuple[float, str]] = {}
    for (config, point), stats in _point_stats(rows).items():
        if config not in best or _sort_key(stats) > best[config][0]:
            best[config] = (_sort_key(stats), point)
    return {config: point for config, (_, point) in best.items()}


def _close_contenders(rows: Sequence[dict], config: str, margin: float) -> list[str]:
    """The two best point labels of ``config`` if their mean box APs are within ``margin``."""
    ranked = sorted(
        ((stats, point) for (c, point), stats in _point_stats(rows).items() if c == config),
        key=lambda item: _sort_key(item[0]),
        reverse=True,
    )
    if len(ranked) < 2:
        return []
    (first, p1), (second, p2) = ranked[:2]
    gap = _sort_key(first) - _sort_key(second)
    return [p1, p2] if gap <= margin else []


def run_sweep(
    config_files: Sequence[str],
    points: Sequence[GridPoint],
    seeds: Sequence[int],
    work_dir: str,
    opts: Sequence[str] = (),
    tie_seeds: Sequence[int] = (),
    tie_margin: float = 2.0,
    progress: Callable[[str], None] = logger.info,
    **launch_kwargs,
) -> list[dict]:
    """Train every config at every grid point over ``seeds``, then ``tie_seeds`` for the two
    best points of each config whose mean box APs are within ``tie_margin``, and for any point
    that then leads that config without them.

    Args:
        opts: overrides of every run (before the point's); they must name a tuning test set.
        launch_kwargs: ``launch``, ``machine_rank``, as for :func:`compare_activations`.

    Returns:
        One row per run: the keys of ``compare_activations``' rows plus ``point``.

    Raises:
        ValueError: a run would be evaluated on a held-out test set.
    """
    check_tuning_test_sets(config_files, points, opts)
    by_label = {point.label: point for point in points}

    def train(configs: Sequence[str], point: GridPoint, run_seeds: Sequence[int]) -> list[dict]:
        folder = os.path.join(work_dir, "sweep", point.folder)
        progress(f"sweep point {point.label}: {len(configs)} config(s) x seeds {list(run_seeds)}")
        found = compare_activations(
            configs, run_seeds, folder, [*opts, *point.opts], progress=progress, **launch_kwargs
        )
        return [{**row, "point": point.label} for row in found]

    rows = [row for point in points for row in train(config_files, point, seeds)]
    extra = [s for s in tie_seeds if s not in seeds]
    if extra:
        for config_file in config_files:
            label = os.path.splitext(os.path.basename(config_file))[0]
            contenders = _close_contenders(rows, label, tie_margin)
            for point in contenders:
                rows += train([config_file], by_label[point], extra)
            # Means over different seeds do not compare (one seed can be harder for every
            # point): a point that now leads without the tie seeds is run on them too, until
            # the leader has them.
            while contenders:
                leader = best_points([r for r in rows if r["config"] == label])[label]
                ran = {r["seed"] for r in rows if r["config"] == label and r["point"] == leader}
                missing = [s for s in extra if s not in ran]
                if not missing:
                    break
                rows += train([config_file], by_label[leader], missing)
    return rows


def run_best_points(
    config_files: Sequence[str],
    points: Sequence[GridPoint],
    sweep_rows: Sequence[dict],
    seeds: Sequence[int],
    work_dir: str,
    opts: Sequence[str] = (),
    progress: Callable[[str], None] = logger.info,
    **launch_kwargs,
) -> list[dict]:
    """The final comparison: each config at its best point (:func:`best_points` of
    ``sweep_rows``) over ``seeds``, on its own test set, into ``<work_dir>/<config>/seed<k>``.

    Returns:
        The rows of :func:`compare_activations`, with ``overrides`` set to the point's label.
    """
    best = best_points(sweep_rows)
    by_label = {point.label: point for point in points}
    rows = []
    for config_file in config_files:
        point = by_label[best[os.path.splitext(os.path.basename(config_file))[0]]]
        progress(f"final: {config_file} at its best point {point.label}")
        found = compare_activations(
            [config_file], seeds, work_dir, [*opts, *point.opts], progress=progress, **launch_kwargs
        )
        rows += [{**row, "overrides": point.label} for row in found]
    return rows


def _markdown(rows: Sequence[dict], command: str) -> str:
    from tabulate import tabulate

    stats = _point_stats(rows)
    best = best_points(rows)
    points = list(dict.fromkeys(row["point"] for row in rows))
    table = []
    for config in dict.fromkeys(row["config"] for row in rows):
        line = [config, next(s["activation"] for (c, _), s in stats.items() if c == config)]
        for point in points:
            s = stats.get((config, point))
            if s is None:
                line.append("-")
                continue
            box = f"{s['bbox_mean']:.2f}" + (
                "" if math.isnan(s["bbox_std"]) else f" ± {s['bbox_std']:.2f}"
            )
            if s["diverged"]:
                # A diverged seed makes the point's mean NaN (it ranks last); say how many,
                # and what the others gave.
                others = ", ".join(f"{float(v):.2f}" for v in s["finished_bbox"])
                box = (
                    f"{s['diverged']} of {len(s['seeds'])} diverged, others {others}"
                    if others
                    else "diverged"
                )
            cell = f"{box} (n={len(s['seeds'])})"
            line.append(f"**{cell}**" if best[config] == point else cell)
        table.append(line)
    machines = sorted({describe_machine(r) for r in rows if r.get("cpu")}) or ["not recorded"]
    return "\n".join(
        [
            "# Sweep",
            "",
            f"Command: `{command}`. Machine: {'; '.join(machines)}.",
            "",
            "Box AP on the tuning test set, mean ± sample std over seeds (n); the best point "
            "of each config in bold.",
            "",
            tabulate(table, ["config", "activation", *points], tablefmt="github"),
            "",
        ]
    )


def write_sweep_reports(rows: Sequence[dict], results_dir: str, command: str) -> dict[str, str]:
    """Write ``sweep.csv`` (one row per run) and ``sweep.md`` (the grid table, best marked).

    Returns:
        ``{"csv": path, "md": path}``.
    """
    os.makedirs(results_dir, exist_ok=True)
    paths = {ext: os.path.join(results_dir, f"sweep.{ext}") for ext in ("csv", "md")}
    write_rows_csv(rows, SWEEP_COLUMNS, paths["csv"])
    atomic_write(paths["md"], lambda f: f.write(_markdown(rows, command).encode()))
    return paths
